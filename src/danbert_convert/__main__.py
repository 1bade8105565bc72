from danbert_convert.cli import main

main()

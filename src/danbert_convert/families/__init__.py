"""Model families: one module per architecture family (bert.py; ELECTRA and ALBERT to come).

A family module holds its declarative tensor table (TF variable name -> transformers name,
with the transform each needs), its heads and the classes they make, `plan()`, which checks a
checkpoint against the table, and the config.json it writes (`hf_config`). Its numpy
reference forward for verify is a module of its own (bert_reference.py) that shares no code
with the table: verify compares the conversion with an independent computation. (BERT's
bert_config.json is still read and checked in source.py.)
"""

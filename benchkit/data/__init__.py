"""Datasets: declaring them, the chunk format, chunking, migration and streaming.

``format`` (chunk files), ``index`` (``index.json``), ``sample`` (``File``), ``declare``
(``@bench.dataset``), ``classic`` (the original ``ProcessorDataset``), ``writer`` (chunking),
``migrate`` (chunk, test, upload) and ``stream`` (reading) each live in their own module;
importing this package imports none of them.
"""

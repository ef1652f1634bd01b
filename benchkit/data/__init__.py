"""Datasets: declaring them, the chunk format, chunking, migration, streaming and mixing.

``format`` (chunk files), ``index`` (``index.json``), ``sample`` (``File``), ``declare``
(``@bench.dataset``), ``classic`` (the original ``ProcessorDataset``), ``writer`` (chunking),
``migrate`` (chunk, test, upload); the read path: ``plan`` (orders and shards, pure),
``epoch`` (the shared epoch state), ``source`` (where chunks come from), ``cache`` (the remote
chunk cache), ``prefetch``, ``batch`` (files through workers without copies), ``stream``
(``IterableChunk``, ``open_dataset``), ``loader`` (``StreamingDataLoader``, ``get_dataset``)
and ``mix`` (several datasets as one). Each lives in its own module; importing this package
imports none of them.
"""

"""The `.emm` file: format constants and metadata keys (`constants`), the in-memory graph (`graph`), the
record layouts shared by both sides (`layout`), the writer, the reader and the safe-file helper.

The reader and writer API is re-exported here (as gguf-py's package does), so `from edgemerge import emm;
emm.read_emm(path)` reads a file.
"""
from edgemerge.emm.files import atomic_write_bytes
from edgemerge.emm.layout import node_flags_problem, pack_indices, unpack_indices
from edgemerge.emm.reader import read_emm, read_sections
from edgemerge.emm.writer import EmmWriter, to_bytes, write_emm

__all__ = ["EmmWriter", "atomic_write_bytes", "node_flags_problem", "pack_indices", "read_emm", "read_sections",
           "to_bytes", "unpack_indices", "write_emm"]

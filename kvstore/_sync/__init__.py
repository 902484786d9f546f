"""``kvstore.sync``: make the keys of one store that match a pattern equal in another.

How a run goes
--------------
1. The source keys matching ``pattern`` are listed. Each is compared with the destination
   (by ``workers`` threads): size, checksum and metadata, from :meth:`AbstractStore.stat`,
   which reads no data where the store keeps a checksum beside the metadata (MemoryStore;
   S3Store's ``kvstore-crc32`` header). An equal key is ``skipped``; one whose data is
   equal but metadata differs gets its metadata only; any other is to be sent.
2. Where one side keeps no checksum for a key (FileSystemStore until its index keeps
   one, an object written into S3 by another tool), that side's data is read and hashed
   to compare it: that costs a full read, and the key is listed in ``SyncReport.hashed``.
   A dry run never reads data: it counts such a key as one to send.
3. The keys to send go through ``pending -> transferring -> done``: the source's
   :class:`~kvstore.Value` is streamed into ``destination.set`` (one atomic write, with its
   usual events), its CRC-32 computed on the way, and the destination is then checked:
   its size, metadata and checksum must be the source's (a destination that keeps no
   checksum is read back to hash it, listed in ``hashed`` too). A mismatch is a failed
   attempt. Between two S3Stores of one service (same endpoint, region and access key) a
   key is copied server-side instead (``CopyObject`` through the destination's ``copy``
   machinery, ``AbstractStore._copy_in``): no byte passes through this process, and the
   destination's stat is checked against the source's.
4. With ``delete=True``, destination keys matching ``pattern`` that the source lacks are
   deleted.

A failed attempt is retried after a backoff (:mod:`kvstore._retry`) when its error is
transient, at most ``retries`` more times; then the key is ``failed`` with its message and
the others go on. A source key that vanishes meanwhile is ``skipped``.

The state file
--------------
``state=PATH`` keeps every key's state, attempts, message and, once done or skipped, the
fingerprint of the source it matched (size, checksum, metadata digest, modification time)
in a JSON document (:func:`encode_state` / :func:`decode_state`), replaced atomically
(temporary file + rename) as the run goes, at most every ``_StateFile.interval`` seconds
and at the end. A key recorded ``done`` or ``skipped`` whose source still has that
fingerprint is skipped by the next run without looking at the destination; a key left
``pending`` or ``transferring`` by an interrupted run is compared again. Ctrl-C
(``KeyboardInterrupt``) stops the workers at their next read, writes the state file and
propagates.

Modules: :mod:`.state` (the state file), :mod:`.compare` (a key's verdict and plan),
:mod:`.workers` (attempts, retries, the pool, the source's stream), :mod:`.report`
(:class:`SyncReport`), :mod:`.engine` (the run).
"""

from .engine import sync
from .report import SyncReport
from .state import STATE_FORMAT, STATE_VERSION, decode_state, encode_state

__all__ = ["sync", "SyncReport", "encode_state", "decode_state", "STATE_FORMAT", "STATE_VERSION"]

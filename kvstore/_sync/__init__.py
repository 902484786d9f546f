"""``kvstore.sync``: make the keys of one store that match a pattern equal in another.

How a run goes
--------------
1. The source keys matching ``pattern`` are listed, and so is the destination where it
   can say in one listing which keys it holds, with each key's size and token
   (``AbstractStore._sync_listing``; S3Store: ListObjectsV2 pages, the token being the
   metadata object's ETag, new at every commit), while the ``workers`` threads stat the
   source's keys. Each source key is then compared with the destination: a key the listing
   lacks, or shows with another size, is to be sent without asking the destination more,
   and one the state file holds as it is listed is skipped (these are settled in the
   calling thread, needing no request); for the others (by the workers) size, checksum and
   metadata come from :meth:`AbstractStore.stat`, which reads no data where the store
   keeps a checksum beside the metadata (MemoryStore; S3Store's ``kvstore-crc32``
   header). An equal key is ``skipped``; one whose data is equal but metadata differs gets
   its metadata only; any other is to be sent.
2. Where one side keeps no checksum for a key (FileSystemStore until its index keeps
   one, an object written into S3 by another tool), that side's data is read and hashed
   to compare it: that costs a full read, and the key is listed in ``SyncReport.hashed``.
   A dry run never reads data: it counts such a key as one to send.
3. The keys to send go through ``pending -> transferring -> done``: the source's
   :class:`~kvstore.Value` is streamed into ``destination.set`` (one atomic write, with its
   usual events), its CRC-32 computed on the way, and the destination is then checked:
   its size, metadata and checksum must be the source's (a destination that keeps no
   checksum is read back to hash it, listed in ``hashed`` too). A mismatch is a failed
   attempt. Where the destination's commit itself tells what it wrote
   (``AbstractStore._written_stat``; S3Store: the headers and ETag of the metadata object
   it PUT) that is checked instead of a stat, and the listing taken once all keys are sent
   must then show each such key with that size and token, or the key is sent again (a
   failed attempt): the destination's own word for every key, in a listing instead of a
   request per key. A key the listing lacked is written with the hint that it is new
   (``AbstractStore._expect_new``; S3Store: its metadata object is PUT with
   If-None-Match without being read first; if it exists after all, the usual commit goes
   on). Between two S3Stores of one service (same endpoint, region and access key) a
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
and the destination's token of the key (``destination``, where the destination has
tokens) in a JSON document (:func:`encode_state` / :func:`decode_state`), replaced
atomically (temporary file + rename) as the run goes, at most every
``_StateFile.interval`` seconds and at the end. A key recorded ``done`` or ``skipped``
whose source still has that fingerprint is skipped by the next run without a request of
its own: where the destination lists, if the listing shows it with the recorded size and
token (a key changed or deleted in the destination since is compared again); elsewhere
without looking at the destination. A key left ``pending`` or ``transferring`` by an
interrupted run is compared again. Ctrl-C
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

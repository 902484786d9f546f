"""S3Store: the store in an S3 bucket (or any S3-compatible service), through boto3.

Needs the ``s3`` extra (``pip install 'kvstore[s3]'``); boto3 is imported when a store is
made, so ``import kvstore`` works without it.

The package, one module per job: ``options`` (the options and the ``s3://`` URL's query),
``naming`` (object names), ``format`` (the metadata object's body and headers), ``uploads``,
``reads``, ``guard`` (the conditional uploads of writes on ``if_revision``), ``timestamps`` and
``expect`` (the parsing and the requests of the store's own client), ``errors``
(botocore's errors translated at one boundary) and ``store`` (S3Store, its commit and
listing). What a write does to a key is decided by ``kvstore._rules``, as for
every backend.

Layout
------
The layout of :class:`~kvstore.FileSystemStore`, with its key escaping (``_keys``)::

    <prefix><key_to_relpath(key)>.data       the bytes
    <prefix><key_to_relpath(key)>.metadata   the metadata, as a JSON object and nothing else
                                             (then a line of blanks: see Commit point)

so ``aws s3 sync`` of a filesystem store's directory gives a valid S3 store, and a sync the
other way gives a valid filesystem store (``reindex()`` it). A ``prefix`` that does not end
in ``/`` gets one: ``S3Store(b, "team/a")`` uses ``team/a/``, so the stores on ``team/a``
and ``team/ab`` never see each other's keys. Escaped names never contain ``..`` or empty
segments, so no key reaches outside its prefix. S3 object names are limited to 1024 bytes;
a key whose name would be longer (255 x "€" is 2300 characters escaped) is stored as
``<prefix>.kvstore/long/<sha256 of the key>.data`` / ``.metadata`` with the key itself in
the metadata object's ``x-amz-meta-kvstore-key`` header (base64). No escaped name starts
with ``.``, so ``<prefix>.kvstore/`` never holds a key's own objects.

Commit point
------------
A key exists when its ``.metadata`` object exists, and a write is committed when its
metadata object is PUT. Data goes first: a value smaller than ``part_size`` with one
``put_object``, a larger one with a multipart upload whose parts are sent while the source
is read (at most ``upload_workers`` parts of ``part_size`` bytes in memory). The data object
carries a fresh write id (``x-amz-meta-kvstore-write``). The metadata object is then PUT
with ``If-Match`` (the ETag read before) or ``If-None-Match: *`` (a new key), its user
headers naming the data it belongs to: ``kvstore-write``, ``kvstore-crc32``,
``kvstore-size`` and, in a versioned bucket, ``kvstore-data-version``. If-Match compares
ETags, the MD5 of the body alone, so the JSON text is followed by a line of spaces and tabs
drawn at random for each commit: two commits of equal metadata naming different data never
share an ETag (JSON ignores the blanks). A conditional PUT that fails means another writer
committed meanwhile: the metadata is read again and the write retried (so
``update_metadata`` loses no concurrent update), unless a later upload has already replaced
our data, in which case our write has been overtaken (last writer wins). A write hinted as that of a
new key (``kvstore.sync``, for a key its listing lacked) skips the read of the metadata
object and PUTs it with ``If-None-Match: *`` at once; if the key exists after all, that PUT
fails and the write goes on as any other. This relies on the
service applying a conditional PUT atomically, as S3 does; moto's server checks and writes
in two steps, so under heavy contention between instances it can let a lost update through
(threads of one instance also take turns per key, so they never do).

A write on ``if_revision`` checks the revision on a read of the metadata object first, and
its commit is ``If-Match`` on that read (no second read). One that uploads data (``set``,
``set_data``, ``from_file``, ``from_bytes``, ``copy``/``move`` to their destination, and
``set_metadata`` creating a key, which uploads empty data) would, on an unversioned bucket,
overwrite the data object in place before learning that it lost: the winner's metadata
would name data that is gone. So its upload is conditional too (module ``guard``):
``If-Match`` on the ETag of the data object the metadata names, or ``If-None-Match: *``
when there is none, on the PUT, the CompleteMultipartUpload or the CopyObject; of two
racing writers only one replaces the data, the other gets ``ConflictError`` with nothing
written. A data object that the metadata does not name belongs to a write between its
upload and its commit: the write waits for that commit (then ``ConflictError``) while
nothing changes, up to ``pair_timeout``, and then takes it as abandoned and replaces it.
A commit of metadata alone (``update_metadata``, ``set_metadata``) can still land between
such an upload and its commit, and name the data the upload replaced: the failing write
then reads the metadata again and puts those bytes back (kept from the data object's
read, for a value up to ``keep_max``, 1 MiB; a larger one is lost, with a warning: use
versioning), or, if the key has been deleted meanwhile, deletes its upload. The same
undo follows a metadata PUT that fails outright. S3 checks all these conditions; moto 5.2
checks ``If-Match`` / ``If-None-Match`` on PutObject and ``If-None-Match`` on
CompleteMultipartUpload only (not ``If-Match`` there, nor either on CopyObject). Writes
without a condition do none of this and cost what they did; a versioned bucket needs none
of it (the metadata names a version no upload changes).

A reader GETs the metadata object, then the data, and uses the data only if its write id is
the one the metadata names (in a versioned bucket it reads the named ``VersionId``, which no
later write can change). When they differ it reads the metadata again, which may name that
data by now; each new look at one object is paired with the latest look at the other, so it
never pairs new data with old metadata. While the objects keep changing it retries at once
(at most ``read_attempts`` changes): busy writers cannot starve it. Only while nothing
changes does it wait for a writer between its data upload and its metadata PUT (up to
``pair_timeout``). A data object missing under unchanged metadata has vanished outside
kvstore (kvstore uploads data first and deletes metadata first): ``StoreError`` at once.
A metadata object that is not a JSON object makes its key's reads raise ``StoreError``.
Values up to 1 MiB are read whole by ``get()`` (a snapshot); larger ones are streamed on
demand with ``If-Match`` on the data's ETag (or by version), so reading a large Value whose
key has been overwritten since ``get()`` raises :class:`~kvstore.errors.StoreError` on an
unversioned bucket rather than mixing writes.

A delete is a commit too: the metadata object is deleted with ``If-Match`` (a conflict
reads it again), then the data object, only if it is still the deleted metadata's (its
write id, then ``If-Match`` on its ETag): a writer's upload racing the delete is kept.

A stream that fails mid-way aborts the multipart upload (no parts are left behind) before
anything is visible: the key keeps its old value. On an unversioned bucket, however, the
data object is overwritten in place, so a writer killed (or, for a write without a
condition, a metadata PUT failing) in the instant between the two steps leaves new data
under old metadata; reads of that key then raise ``StoreError`` until it is written again.
With bucket versioning enabled there is no such window: the metadata names the data
version, and a failed commit deletes the version it uploaded. Enable versioning where that
matters (and a lifecycle rule for old versions).

Integrity
---------
The CRC32 of the whole value is kept in the metadata object's ``kvstore-crc32`` header
(S3's own checksums are recomputed by whoever overwrites an object, so they prove nothing).
Whole reads verify it (and the size) when the last byte has been read; a mismatch raises
:class:`~kvstore.errors.ChecksumError`. Range reads of the data kvstore wrote are checked
by write id; a range of a data object replaced outside kvstore raises ``ChecksumError``.
Objects synced in from a filesystem store carry no checksum until they are written again.

Transactions
------------
S3 cannot roll back. Inside ``with store.transaction():`` every write is applied at once and
readers anywhere see it; the base class holds the events until the block ends. If the block
raises, the writes made so far stay, and their events are sent after
``transaction_end(state="failed")`` so observers still hear of them. Events carry
``sequence=None``: S3 keeps no change journal.

Listing
-------
``glob`` lists ``list_objects_v2`` pages under the escaped form of the pattern's literal
prefix; ``glob`` (for the keys whose names match) and ``query`` fetch the metadata objects
``max_workers`` at once as the listing's pages arrive, skipping (with a warning) any they
cannot read, in a thread pool that is joined before they return. A key whose metadata
object is unreadable is so left out of both (API.md, Faults), at the price of one GET per
key ``glob`` returns. What they read is kept by the store (``MetadataCache``, at most
``metadata_cache_size`` objects) with each object's ETag, and used again only for a
listing that shows that ETag: every commit writes a body of its own, so an equal ETag is
the same metadata, and a repeated query reads only the metadata objects written since.
``kvstore.sync`` asks for a listing with each key's data size and metadata ETag
(``_sync_listing``): the pages alone, no request per key (but a long key's HEAD).
"""

from __future__ import annotations

from .format import H_CRC, H_CREATED, H_KEY, H_MODIFIED, H_SIZE, H_VERSION, H_WRITE
from .naming import MAX_OBJECT_NAME
from .options import S3Options
from .store import S3Store

__all__ = ["S3Store", "S3Options", "MAX_OBJECT_NAME",
           "H_WRITE", "H_CRC", "H_SIZE", "H_VERSION", "H_CREATED", "H_MODIFIED", "H_KEY"]

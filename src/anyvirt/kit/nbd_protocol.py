"""The NBD protocol's numbers, shared by the client that reads QEMU's exports
(``anyvirt_libvirt.nbd``) and the server that serves remote volumes to QEMU
(:mod:`anyvirt.kit.nbd_server`). From the protocol document, doc/proto.md of the
NBD project; names as there, without the ``NBD_`` prefix."""

from __future__ import annotations

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 8, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR_UNSUP, REP_ERR_UNKNOWN = (1 << 31) + 1, (1 << 31) + 6
INFO_EXPORT = 0
TRANSMISSION_HAS_FLAGS, TRANSMISSION_READ_ONLY = 1, 2
CMD_READ, CMD_WRITE, CMD_DISC, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 0, 1, 2, 4, 6, 7
REPLY_FLAG_DONE = 1
REPLY_NONE, REPLY_OFFSET_DATA, REPLY_OFFSET_HOLE, REPLY_BLOCK_STATUS = 0, 1, 2, 5
REPLY_ERROR_BIT = 1 << 15
EPERM, EIO, EINVAL = 1, 5, 22
MAX_READ = 32 * 1024 * 1024  # QEMU's own bound on one request

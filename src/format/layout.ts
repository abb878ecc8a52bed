/**
 * RAFS v6 on-disk structures: sizes and field offsets, read like the kernel's fs/erofs/erofs_fs.h.
 * Everything is little-endian. docs/format.md is the prose specification of the same constants
 * and names the upstream source each one was checked against.
 *
 * Bootstrap layout (byte offsets):
 *
 *   0       zeros
 *   1024    EROFS superblock (128 B)
 *   1152    RAFS v6 extended superblock (256 B)
 *   1408    device table: one 128 B slot per blob
 *   align4K blob table: one 256 B entry per blob; prefetch table (u32 nids) right after it
 *   align4K meta area: meta_blkaddr points here; inodes start one block later (root nid 128)
 *           inodes (32 B slots) with inline xattrs, inline tails and chunk index arrays
 *   align4K plain data blocks of directories and symlinks that do not fit inline
 *   align4K chunk info table (80 B per distinct chunk), padded to 4 KiB
 */

export const BLOCK_BITS = 12;
export const BLOCK_SIZE = 1 << BLOCK_BITS;

/* ---- EROFS superblock: 128 B at offset 1024 (struct erofs_super_block) ---- */
export const SB_OFFSET = 1024;
export const SB_SIZE = 128;
export const EROFS_MAGIC = 0xe0f5e1e2;
export const SB = {
  magic: 0, //            u32  EROFS_MAGIC
  checksum: 4, //         u32  0 (no SB_CHKSUM feature)
  featureCompat: 8, //    u32  COMPAT_RAFS_V6
  blkszbits: 12, //       u8   12
  extslots: 13, //        u8   0
  rootNid: 14, //         u16
  inos: 16, //            u64  number of distinct inodes
  buildTime: 24, //       u64  seconds; mtime of compact inodes
  buildTimeNsec: 32, //   u32
  blocks: 36, //          u32  sum of the blobs' device blocks (upstream convention)
  metaBlkaddr: 40, //     u32  block of nid 0
  xattrBlkaddr: 44, //    u32  0: no shared xattrs
  uuid: 48, //            u8[16]
  volumeName: 64, //      u8[16]
  featureIncompat: 80, // u32  CHUNKED_FILE | DEVICE_TABLE, exactly
  u1: 84, //              u16  0
  extraDevices: 86, //    u16  number of blobs
  devtSlotoff: 88, //     u16  1408 / 128 = 11
  // 90..128 reserved
} as const;
export const FEATURE_COMPAT_RAFS_V6 = 0x4000_0000;
export const FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;
export const FEATURE_INCOMPAT_DEVICE_TABLE = 0x8;

/* ---- RAFS v6 extended superblock: 256 B at offset 1152 (RafsV6SuperBlockExt) ---- */
export const EXT_SB_OFFSET = SB_OFFSET + SB_SIZE;
export const EXT_SB_SIZE = 256;
export const EXT = {
  flags: 0, //               u64  RafsSuperFlags
  blobTableOffset: 8, //     u64  4 KiB aligned, >= 4096
  blobTableSize: 16, //      u32  multiple of 256
  chunkSize: 20, //          u32  power of two, 4 KiB..16 MiB
  chunkTableOffset: 24, //   u64  4 KiB aligned
  chunkTableSize: 32, //     u64  multiple of 80
  prefetchTableOffset: 40, // u64
  prefetchTableSize: 48, //  u32  multiple of 4
  // 52 u32 padding, 56..256 reserved
} as const;

/** RafsSuperFlags bits (rafs/src/metadata/mod.rs). */
export const SUPER_FLAGS = {
  COMPRESSION_NONE: 0x1,
  COMPRESSION_LZ4: 0x2,
  HASH_BLAKE3: 0x4,
  HASH_SHA256: 0x8,
  EXPLICIT_UID_GID: 0x10,
  HAS_XATTR: 0x20,
  COMPRESSION_GZIP: 0x40,
  COMPRESSION_ZSTD: 0x80,
  INLINED_CHUNK_DIGEST: 0x100,
  TARTFS_MODE: 0x200,
} as const;

/* ---- device slot: 128 B each from offset 1408 (struct erofs_deviceslot / RafsV6Device) ---- */
export const DEVTABLE_OFFSET = EXT_SB_OFFSET + EXT_SB_SIZE;
export const DEVSLOT_SIZE = 128;
export const DEVSLOT = {
  blobId: 0, //        u8[64] ASCII hex blob id (the EROFS "tag")
  blocks: 64, //       u32 uncompressed size / 4096
  mappedBlkaddr: 68, // u32 start in the flat block address space
  // 72..128 reserved
} as const;
/** mapped_blkaddr of each device is rounded up to this (builder/src/core/v6.rs V6_BLOCK_SEG_ALIGNMENT). */
export const MAPPED_BLKADDR_ALIGN = 0x8_0000;
/** Device ids are a u8 and id 0 is the bootstrap, so at most 254 blobs. */
export const MAX_BLOBS = 254;

/* ---- blob table entry: 256 B (RafsV6Blob) ---- */
export const BLOB_ENTRY_SIZE = 256;
export const BLOB = {
  blobId: 0, //             u8[64]
  blobIndex: 64, //         u32
  chunkSize: 68, //         u32
  chunkCount: 72, //        u32
  compressionAlgo: 76, //   u32 0 none, 1 lz4_block, 2 gzip, 3 zstd
  digestAlgo: 80, //        u32 0 blake3, 1 sha256
  features: 84, //          u32 BlobFeatures
  compressedSize: 88, //    u64
  uncompressedSize: 96, //  u64
  blobTocSize: 104, //      u32
  ciCompressor: 108, //     u32
  ciOffset: 112, //         u64
  ciCompressedSize: 120, // u64
  ciUncompressedSize: 128, // u64
  blobTocDigest: 136, //    u8[32]
  blobMetaDigest: 168, //   u8[32]
  blobMetaSize: 200, //     u64
  cipherIv: 208, //         u8[8]
  cipherAlgo: 216, //       u32
  // 220..256 reserved
} as const;
export const COMPRESSION_ALGOS = ['none', 'lz4_block', 'gzip', 'zstd'] as const;
export const DIGEST_ALGOS = ['blake3', 'sha256'] as const;
/** BlobFeatures.ALIGNED: uncompressed chunks are 4 KiB aligned. */
export const BLOB_FEATURE_ALIGNED = 0x1;

/* ---- chunk info table row: 80 B (RafsV5ChunkInfo, reused by v6) ---- */
export const CHUNK_INFO_SIZE = 80;
export const CHUNK = {
  digest: 0, //            u8[32]
  blobIndex: 32, //        u32
  flags: 36, //            u32
  compressedSize: 40, //   u32
  uncompressedSize: 44, // u32
  compressedOffset: 48, // u64
  uncompressedOffset: 56, // u64
  fileOffset: 64, //       u64 offset in the first file that used it (informational)
  index: 72, //            u32 index inside the blob (CI index)
  crc32: 76, //            u32 0 unless HAS_CRC32
} as const;
export const MAX_CHUNK_INDEX = 1 << 24;

/* ---- inodes (struct erofs_inode_compact / erofs_inode_extended) ---- */
export const INODE_SLOT_SIZE = 32;
export const INODE_SLOT_BITS = 5;
export const INODE_COMPACT_SIZE = 32;
export const INODE_EXTENDED_SIZE = 64;
/** nid of the root: inodes start one block after meta_blkaddr, so nid 0 is never used. */
export const ROOT_NID = BLOCK_SIZE / INODE_SLOT_SIZE;
export const COMPACT = {
  format: 0, //       u16 bit 0 = 0, bits 1..3 datalayout
  xattrIcount: 2, //  u16
  mode: 4, //         u16
  nlink: 6, //        u16
  size: 8, //         u32
  reserved: 12, //    u32 0 (i_mtime only under COMPAT_MTIME, which we never set)
  u: 16, //           u32 raw_blkaddr | rdev | chunk format
  ino: 20, //         u32
  uid: 24, //         u16
  gid: 26, //         u16
  // 28..32 reserved
} as const;
export const EXTENDED = {
  format: 0, //       u16 bit 0 = 1
  xattrIcount: 2, //  u16
  mode: 4, //         u16
  // 6 u16 reserved
  size: 8, //         u64
  u: 16, //           u32
  ino: 20, //         u32
  uid: 24, //         u32
  gid: 28, //         u32
  mtime: 32, //       u64
  mtimeNsec: 40, //   u32
  nlink: 44, //       u32
  // 48..64 reserved
} as const;
export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_CHUNK_BASED = 4;
/** i_u of chunk-based inodes: INDEXES flag | (log2(chunk size) - block bits). */
export const CHUNK_FORMAT_INDEXES = 0x20;
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
/** One chunk index (struct erofs_inode_chunk_index / RafsV6InodeChunkAddr), 8-byte aligned. */
export const CHUNK_ADDR_SIZE = 8;
export const CHUNK_ADDR = {
  blobAddrLo: 0, // u16 low 16 bits of the CI index
  blobAddrHi: 2, // u16 bits 0..7 device id (blob index + 1), bits 8..15 CI index bits 16..23
  blkAddr: 4, //    u32 uncompressed offset / 4096 inside the blob
} as const;
/** c_blk_addr of a hole in the kernel's chunk index; the model has no holes, so it is rejected. */
export const NULL_ADDR = 0xffffffff;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/* ---- directory entries: 12 B (struct erofs_dirent) ---- */
export const DIRENT_SIZE = 12;
export const DIRENT = {
  nid: 0, //      u64
  nameoff: 8, //  u16 offset of the name inside the block
  fileType: 10, // u8
  // 11 u8 reserved
} as const;
export const FT_UNKNOWN = 0;
export const FT_REG_FILE = 1;
export const FT_DIR = 2;
export const FT_CHRDEV = 3;
export const FT_BLKDEV = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_SYMLINK = 7;
export const MAX_NAME = 255;
/** The kernel refuses symlinks of PAGE_SIZE bytes or more. */
export const MAX_SYMLINK = BLOCK_SIZE - 1;

/* ---- inline xattrs (struct erofs_xattr_ibody_header / erofs_xattr_entry) ---- */
export const XATTR_IBODY_HEADER_SIZE = 12; // u32 name filter/reserved, u8 shared count, u8[7]
export const XATTR_ENTRY_HEADER_SIZE = 4; //  u8 name_len, u8 name_index, u16 value_size
/** Name index -> prefix; the stored name is the rest of the full name after the prefix. */
export const XATTR_PREFIXES: ReadonlyArray<readonly [index: number, prefix: string]> = [
  [1, 'user.'],
  [2, 'system.posix_acl_access'],
  [3, 'system.posix_acl_default'],
  [4, 'trusted.'],
  [6, 'security.'],
];

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

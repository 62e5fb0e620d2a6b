// Package backup is the agent's backup runner: it takes a dump of one redis
// member into the backup store (Dump), reads a stored dump back (Fetch,
// Unpack), proves a dump restores (Drill) and restores one into an addon
// (Restore), with a throw-away redis-server serving the dump (Scratch;
// RuntimeScratch runs it as a container of the agent's runtime).
//
// A stored dump is one object: a tar.gz of the member's dump.rdb (and,
// with AOF on, its appendonlydir/), age-sealed with the keyring's current
// key. Dump streams it from the member's files through tar, gzip
// (klauspost/compress at its fastest level, over twice the standard
// library's speed on an RDB, which is already compressed; any gzip reader
// reads it, and Unpack reads archives of either), age, and a SHA-256 taken
// as Store.Put reads, in three goroutines joined by io.Pipes, with fixed
// buffers: memory does not grow with the dataset, and a dump that fails or
// is cancelled leaves nothing in the store (Put is atomic). The record keeps the object's size, SHA-256
// and key id, the member's key count just before the save and once the
// files were opened (a bracket: writes go on during a dump), and a sample
// of keys whose values did not change across that window, with a digest of
// each value.
//
// What a dump holds, and why:
//   - dump.rdb as the BGSAVE we asked for (redisctl.BGSaveNotify) left
//     it: a consistent point-in-time snapshot. The file is opened as soon
//     as the save renames it in place (the path names another file than
//     when the server accepted our BGSAVE; polled every 5 ms), so the
//     stream starts before the server notices the save ended; the archive
//     ends only once the server reported the save done and ok, else the
//     dump fails and stores nothing. A later save renames a new file in
//     place and never touches the open one, so what is streamed is one
//     whole snapshot. The stream cannot start earlier, following the
//     temp-<pid>.rdb the save writes: the tar header before the file's
//     content holds its size, known only once the save has ended.
//   - With AOF on, also the files the AOF manifest lists (base and
//     incremental; history files are garbage) and the manifest as read:
//     once the save is done, the manifest is read, every file it names
//     opened, the manifest read again (a rewrite in between changes it:
//     start over, up to 5 times), and each file streamed up to the size
//     it had when opened. Only the
//     last incremental file grows; its copy ends on a command boundary or
//     within one, which redis's aof-load-truncated (the default) accepts
//     when loading the last file. Open files survive a rewrite deleting
//     them. This is what the member itself would load on a restart,
//     slightly newer than dump.rdb; a scratch server loads the AOF when
//     the archive has one, so the drill checks what a restore would copy.
//     AOF on with no manifest yet (AOF just switched on, its first rewrite
//     running) falls back to dump.rdb alone; DumpResult.AOF says which.
//
// Fetch streams a stored object back, checks its SHA-256 against the
// record and unseals it (age authenticates every 64 KiB chunk and the
// end); a mismatch or a failed authentication is an error wrapping
// backupstore.ErrCorrupt, and nothing restores from it. Unpack extracts an
// archive into a directory, refusing anything but regular files and
// directories below it and bounded in size.
//
// Drill and Restore fetch and unpack into a fresh directory (no archive on
// disk: Fetch streams into Unpack, the files are used once Fetch verified
// the whole object; DrillSum also hashes the plaintext archive on the
// way, the sum a download is checked against), start a scratch server on
// it, wait until it has loaded, then Drill compares its key count and the
// sampled values with the record, and Restore copies
// every key into the addon's primary (redisctl.CopyKeys: FLUSHALL ASYNC,
// then DUMP/RESTORE in batches). Restoring through the live primary, not
// by swapping dump.rdb under a stopped member: nothing restarts, no
// restart gate or failover is involved, the replica follows through
// replication as with any write, the member's files, config and Sentinel's
// view are untouched, a restore into an addon of a newer engine works
// (the scratch runs the addon's engine version, which reads older RDBs),
// and a restore that fails half-way leaves a running addon whose data an
// operator can restore again; swapping files would need every member
// stopped at once (a replica would otherwise resync the primary's old
// data, or the wrong node be promoted) and is a full outage.
//
// It does not own: when to dump, on which member, names and retention
// (package backup and the coordinator decide), the stores and encryption
// (backupstore), nor any redis command (redisctl) or container
// (agent/runtime). The tests run real redis-server processes, real
// containerd for the scratch server and the real local store.
package backup

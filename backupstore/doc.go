// Package backupstore owns where backup objects live and how they are
// encrypted at rest: one Store interface (Put, Get, Stat, List, Delete)
// with two implementations that pass one conformance suite
// (backupstore/storetest) — Local, a directory, and S3, an S3-compatible
// bucket through minio-go — its Config ("backup_store" in the coordinator's
// config file), and Seal/Unseal with a Keyring of age keys. It does not own
// what goes into a backup (agent/backup: the dump, tar.gz, checksum), the
// backup's name, schedule or retention (backup/), nor the backup records
// (the coordinator's FSM).
//
// # Keys
//
// Object keys are slash-separated segments of [A-Za-z0-9._-], none empty
// or starting with a dot, at most 1024 bytes (ValidKey), e.g.
// "my-app-3030/my-app-3030-20261207.age". Both stores refuse any other key
// with an error, so a key can never reach outside the store (no "..", no
// absolute path) and never collides with Local's temporary files. List
// takes a plain string prefix, as S3 does, and returns keys sorted.
//
// # Atomicity
//
// A Put is all or nothing: the object is visible only once complete, and a
// Put that fails (its reader fails, its ctx is cancelled) leaves no object
// and replaces nothing.
//   - Local writes a temporary file ".put-*" in the object's directory,
//     fsyncs it, renames it over the key and fsyncs the directory; a failed
//     Put removes it. Files are 0600, directories 0700. Copying uses one
//     fixed 1 MiB buffer: memory does not grow with the object.
//   - S3 streams every object as a multipart upload of PartSize parts (one
//     buffer of that size, default 16 MiB): S3 shows nothing before the
//     upload is completed after the last part; minio-go aborts the upload on
//     any error, with a detached deadline so a cancelled ctx still aborts.
//
// Only a process killed mid-Put leaves something behind: a temporary file
// or an incomplete upload, invisible to Get/Stat/List and listed by
// Incomplete on either store.
//
// # Encryption
//
// Seal and Unseal use age (filippo.io/age) with X25519 keys
// ("AGE-SECRET-KEY-1…", GenerateKey): a well-kept, audited format and
// library; authenticated (ChaCha20-Poly1305 STREAM in 64 KiB chunks, the
// last one flagged, so a flipped, truncated or appended byte fails with
// ErrCorrupt); streaming, with memory that does not depend on the size.
// A Keyring maps key ids to keys; Seal uses Current and returns its id, to
// be recorded with the backup, and Unseal takes that id, so keys rotate
// without re-encrypting old backups. Stores only ever see sealed bytes.
//
// Secrets (Config.SecretKey, Keyring keys) are never printed by fmt or
// slog, nor quoted in errors; JSON carries them, for the config file and
// the jobs sent to agents.
package backupstore

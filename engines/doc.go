// Package engines owns the rules of the engine catalog: which upgrade of an
// addon's engine version is allowed, what to upgrade to first when it is
// not, and whether an allowed upgrade can roll one node at a time.
//
// It is logic only, like package scheduler: no I/O, no clock, no state. The
// catalog (api.EngineVersion entries, api.DefaultEngines by default) is the
// data; everything a rule needs (version, RDB format, which versions of
// another engine a version takes over) is in the entries, so adding a
// version is a catalog entry, not code.
//
// # Rules (DESIGN.md §3, issue 11)
//
//   - Never a downgrade, and never to the version an addon is on.
//   - Within one engine and major, any newer version is allowed ("minor").
//   - To reach the next major of an engine ("major"), the addon must first
//     be on the latest minor of its current major that the catalog lists; a
//     major is never skipped.
//   - An engine switch ("switch") lands only on a version whose SwitchFrom
//     names the addon's engine and major (Valkey 8.0 loads a Redis 7 RDB, so
//     redis-7.x → valkey-8.0.1). Nothing in the default catalog takes Valkey
//     data back to Redis, nor Redis 8's RDB 12 to Valkey 8.
//   - A refusal names the version to upgrade to first: the first step of the
//     shortest allowed path to the target, when there is one.
//
// An allowed upgrade is rolling when a replica on the new version syncs from
// a primary on the old one: the new version reads the old one's RDB format
// (RDB of old ≤ RDB of new). That holds for every upward step of the default
// catalog, redis 7 → valkey 8 included. The reverse — an older replica of a
// newer-format primary — never syncs (Redis 7.0 cannot load Valkey 8's RDB
// 11), and a rolling upgrade never needs it: replicas move first, then the
// primary role, then the old primary is replaced, not resynced.
// package packaging's tests check these claims against the real servers.
//
// It does not decide how an upgrade runs (the coordinator's operations do)
// nor hold the catalog (the coordinator's FSM does).
package engines

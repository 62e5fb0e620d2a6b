// Package operation is the decision half of the operation engine: for an
// addon's operation (provision, remove, settings-change, plan-change,
// upgrade, replace-member — the drain and healing moves —, backup,
// restore and rotate-password), what happens next is a pure function of
// the addon's View (FSM copy plus what the leader observes) and the
// operation's recorded steps: advance the current step (with the state
// change it commits), wait (and say why), run one action on the world
// (ping, settings/maxmemory/sentinel checks, switchover, failover, rolling
// sentinel reset, app hook, the upgrade's save and version checks, a
// rotation's password checks) and record its outcome, list a job for an agent (a backup's dump, a
// restore) and wait for its report, fail, or stop at a safe point because
// an operator cancelled.
//
// For backups it also decides which member a dump is taken on (DumpSource:
// a business addon's in-sync replica, never its primary) and the
// pre-flight refusals of a manual backup and of a restore (CheckBackup,
// CheckRestore); when a periodic backup is due and what retention keeps
// are package backup's.
//
// It also decides healing (which replace operations to create for members
// on draining or lost hosts, with a fleet-wide bound that stuck moves do not
// hold, one per addon, never one addon's trouble holding up another), the
// topology rules (the primary the sentinels name at their highest epoch,
// stray masters, sentinels left on a dead primary, forced failovers only on
// certain knowledge, the VIP holder) and an addon's health as a client would
// judge it.
//
// No I/O, no clock, no goroutines: the coordinator's engine (engine.go in
// package coordinator) reads the FSM, calls Next, performs the action and
// commits each step through Raft before the next starts, so a new leader
// resumes any operation from the FSM alone. Everything here is
// table-tested without a network.
package operation

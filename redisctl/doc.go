// Package redisctl owns every conversation the agent and the coordinator
// have with a running redis (or valkey) member and with Sentinel: the
// go-redis client options (one constructor for members, one for
// sentinels), PING, INFO replication, REPLICAOF, the planned zero-loss
// switchover, the sentinels' view of a master (GET-MASTER-ADDR-BY-NAME
// asked of one sentinel or of a majority; SENTINEL MASTER of all of them
// resolved at the highest configuration epoch: AskLatest; REPLICAS,
// SENTINELS), FAILOVER, RESET and re-MONITOR (Remonitor), their failover
// announcements (SUBSCRIBE +switch-master and
// +failover-state-wait-promotion: WatchSwitchMaster), a member's identity
// settings (CONFIG GET/SET of bind, port, dir, announce addresses) and
// fresh-connection liveness (Knock), memory figures (UsedMemory,
// CheckMaxmemory), what an upgrade checks (SAVE snapshots, INFO server,
// keyspace), what backups need (BGSave waited for, the keyspace count, a
// sample of keys with value digests, WaitLoaded, CopyKeys: DUMP/RESTORE of
// every key into a primary), and the mapping between an addon's settings and redis's
// CONFIG parameters in both directions (what redis.conf says, what CONFIG
// SET changes live, what CONFIG GET must answer), and the values of the
// failover guard's parameters (FenceParams: min-replicas-to-write and
// -max-lag; PriorityParam: replica-priority; docs/failover.md).
//
// Credentials: every client of this package logs in with the addon's fleet
// credential (api.Addon.FleetPassword), never with the app's password: on a
// redis member as FleetUser (MemberOptions and Knock do it, once for every
// caller), on a sentinel as its default user, whose password is the same
// credential (SentinelOptions). The ACL that confines the app's default user
// (AppDenied, AppRules) is defined here, rendered into redis.conf by
// agent/render and applied live to members created before it (ApplyACL,
// ApplySentinelAuth: the migration, no restart, no client cut).
//
// Member TLS: the members and sentinels of an addon created with member
// TLS listen on TLS only. MemberOptions, SentinelOptions and Knock (the
// one place clients are built) speak TLS to an address the process's TLS
// table names (tls.go: SetTLS, SetTLSSource, TLSFor; the agent states it
// from its assignments, the coordinator answers from its state), with the
// cluster CA and the addon id as the name the certificate must carry.
//
// Every network call takes a ctx and bounds itself with a deadline of its
// own when the ctx has none sooner; clients are short-lived (one
// connection, no retries: callers retry on their next pass) unless the
// caller hands one in. Errors say which address and which command failed,
// never the password. Sentinel's refusals that callers act on are typed:
// ErrNoGoodReplica (-NOGOODSLAVE), ErrFailoverInProgress (-INPROG),
// ErrNoMajority, ErrNoReplica; test them with errors.Is.
//
// It does not own what the files of a member say beyond the settings
// parameters (agent/render renders redis.conf and sentinel.conf, taking
// the settings lines from Config), when to talk to whom (the agent's
// safety gate and probes, the coordinator's controllers decide), nor
// processes and containers (agent/runtime). The pure parts (ParseReplication,
// the settings mapping, the SENTINEL REPLICAS/SENTINELS parser) have table
// tests; the rest is tested against real redis-server and redis-sentinel
// processes on loopback addresses.
package redisctl

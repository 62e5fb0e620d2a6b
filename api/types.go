package api

import (
	"fmt"
	"log/slog"
	"sort"
	"time"
)

// HostState is the lifecycle state of a host as the coordinator sees it.
type HostState string

// Host states.
const (
	HostReady    HostState = "ready"
	HostDown     HostState = "down"
	HostDraining HostState = "draining"
)

// Host is a machine running one agent.
type Host struct {
	ID        string            `json:"id"`
	Address   string            `json:"address"`
	AgentAddr string            `json:"agent_addr,omitempty"`
	MemoryMB  int               `json:"memory_mb"`
	Labels    map[string]string `json:"labels,omitempty"`
	// PublicAddress is the host's address on the internet side, where an
	// addon with internet access is also published (agent config
	// public_address); empty: none.
	PublicAddress string    `json:"public_address,omitempty"`
	State         HostState `json:"state"`
	DownSince     time.Time `json:"down_since,omitzero"`
	// Lost: the host was marked down because nothing on it answers (its
	// members refuse or do not accept connections), not merely because
	// its agent went silent. Only a lost host's primaries are failed over
	// without a switchover.
	Lost bool `json:"lost,omitempty"`
	// DrainingSince is when the host was last set draining.
	DrainingSince time.Time `json:"draining_since,omitzero"`
	RegisteredAt  time.Time `json:"registered_at"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitempty"`
}

// Zone is the host's zone label, empty when unlabelled.
func (h Host) Zone() string { return h.Labels["zone"] }

// PlanKind tells a single-node plan from a highly available one.
type PlanKind string

// Plan kinds.
const (
	PlanStarter  PlanKind = "starter"
	PlanBusiness PlanKind = "business"
)

// Plan is an entry of the plans catalog, e.g. redis-business-1024.
type Plan struct {
	Name     string   `json:"name"`
	Kind     PlanKind `json:"kind"`
	MemoryMB int      `json:"memory_mb"`
	Backups  bool     `json:"backups"`
}

// Redis is how many redis members the plan runs.
func (p Plan) Redis() int {
	if p.Kind == PlanBusiness {
		return 2
	}
	return 1
}

// Sentinels is how many sentinel members the plan runs.
func (p Plan) Sentinels() int {
	if p.Kind == PlanBusiness {
		return 3
	}
	return 0
}

// HAProxies is how many haproxy members the plan runs: the entrypoint. A
// starter has one, on its redis node's host, so its URL is an address of
// its own that a change to a business plan keeps (the pair's second
// member joins it).
func (p Plan) HAProxies() int {
	if p.Kind == PlanBusiness {
		return 2
	}
	return 1
}

// Engine is a Redis-compatible server implementation.
type Engine string

// Engines.
const (
	EngineRedis  Engine = "redis"
	EngineValkey Engine = "valkey"
)

// Role is what a member runs.
type Role string

// Member roles.
const (
	RoleRedis    Role = "redis"
	RoleSentinel Role = "sentinel"
	RoleHAProxy  Role = "haproxy"
)

// EngineVersion is an entry of the engine catalog. Everything the upgrade
// rules (package engines) need is data here, so adding a version is an
// entry, not code.
type EngineVersion struct {
	Engine  Engine          `json:"engine"`
	Version string          `json:"version"`
	Images  map[Role]string `json:"images"`
	Default bool            `json:"default,omitempty"`
	// RDB is the RDB format version this version writes (Redis 7.0: 10,
	// Valkey 8.x: 11, Redis 8.0: 12). A server loads formats up to its own,
	// so a replica syncs from a primary whose format is not newer. 0 means
	// unknown: no rolling upgrade is planned to or from it.
	RDB int `json:"rdb,omitempty"`
	// SwitchFrom lists the versions of another engine whose data this
	// version takes over in an engine switch, as "engine-major" or
	// "engine-major.minor" ("redis-7"). Empty: no switch lands here.
	SwitchFrom []string `json:"switch_from,omitempty"`
}

// Key is the catalog key of an engine version, e.g. "redis-7.0.15".
func (e EngineVersion) Key() string { return fmt.Sprintf("%s-%s", e.Engine, e.Version) }

// Persistence modes.
const (
	PersistenceRDB = "rdb"
	PersistenceAOF = "aof"
)

// Settings are an addon's user-facing switches.
type Settings struct {
	Persistence string `json:"persistence"`
	CacheMode   bool   `json:"cache_mode"`
	// ForceTLS refuses plaintext clients at the entrypoint (TLS is always
	// available beside plaintext) and makes the URL rediss://.
	ForceTLS bool `json:"force_tls"`
	// InternetAccess also publishes the entrypoint on the public address
	// of each entrypoint host (Host.PublicAddress); off, it listens on the
	// private network only.
	InternetAccess bool `json:"internet_access,omitempty"`
	// Entrypoint is how the addon's URL reaches its primary:
	// EntrypointHAProxy (also "", an addon made before the setting) or
	// EntrypointKernel (docs/entrypoint.md).
	Entrypoint string `json:"entrypoint,omitempty"`
	// MemberTLS: the addon's redis members and sentinels speak TLS only
	// (port 0, tls-port, tls-replication yes) with the addon's
	// certificate, and HAProxy reaches them over TLS. Chosen when the
	// addon is created (addons-add --member-tls; the fleet's default is
	// the coordinator's member_tls), never switched afterwards: moving a
	// running addon's ports and replication links is a restart of every
	// member and sentinel (docs/security.md, "Member TLS").
	MemberTLS bool `json:"member_tls,omitempty"`
}

// Entrypoint modes.
const (
	// EntrypointHAProxy: the HAProxy pair proxies every connection.
	EntrypointHAProxy = "haproxy"
	// EntrypointKernel: the VIP holder's kernel forwards connections to the
	// primary (nftables DNAT; agent/kernelpath); the HAProxys keep running
	// behind it.
	EntrypointKernel = "kernel"
)

// ValidateEntrypointMode checks an entrypoint mode ("" is haproxy).
func ValidateEntrypointMode(m string) error {
	switch m {
	case "", EntrypointHAProxy, EntrypointKernel:
		return nil
	}
	return Invalidf("entrypoint %q: use haproxy or kernel", m)
}

// EntrypointMode is the mode s names ("" is haproxy).
func (s Settings) EntrypointMode() string {
	if s.Entrypoint == "" {
		return EntrypointHAProxy
	}
	return s.Entrypoint
}

// DefaultSettings are the settings of a new addon (DESIGN.md §2).
func DefaultSettings() Settings { return Settings{Persistence: PersistenceRDB} }

// AddonStatus is where an addon is in its life.
type AddonStatus string

// Addon statuses.
const (
	AddonProvisioning AddonStatus = "provisioning"
	AddonRunning      AddonStatus = "running"
	AddonUpdating     AddonStatus = "updating"
	AddonRemoving     AddonStatus = "removing"
	AddonError        AddonStatus = "error"
)

// AddonType is the only addon type cacheplane serves.
const AddonType = "redis"

// Member is one running service of an addon on one host.
type Member struct {
	ID        string `json:"id"`
	Role      Role   `json:"role"`
	HostID    string `json:"host_id"`
	Address   string `json:"address,omitempty"`
	Port      int    `json:"port,omitempty"`
	RedisRole string `json:"redis_role,omitempty"` // primary or replica, for role redis
	// Active marks the haproxy member that holds the addon's entrypoint
	// address (the VIP) when the addon has one.
	State  string `json:"state,omitempty"`
	Active bool   `json:"active,omitempty"`
	// Engine and Version, when set, are the engine version this member
	// runs instead of the addon's: an engine upgrade moves one member at
	// a time (its agent restarts it on the new version, data dir kept),
	// and clears them once every member is on the addon's new version.
	Engine  Engine `json:"engine,omitempty"`
	Version string `json:"version,omitempty"`
	// Stopped: the member's process is stopped and not restarted, its data
	// kept (an upgrade that stops every node: a replica that must not be
	// promoted while its primary restarts).
	Stopped bool `json:"stopped,omitempty"`
}

// MemberEngine is the engine version member m of a runs: its own when an
// upgrade set one, else the addon's.
func (a Addon) MemberEngine(m Member) (Engine, string) {
	if m.Engine != "" {
		return m.Engine, m.Version
	}
	return a.Engine, a.Version
}

// Addon is one caching database. Password is the app's password (the
// `default` user of every redis member, the URL's); FleetPassword is the
// fleet's own credential of the addon (redisctl.FleetUser on its redis
// members, the password of its sentinels), which never reaches the app.
// Neither is part of list views (Redacted), nor of logs (LogValue).
type Addon struct {
	ID         string      `json:"id"`
	App        string      `json:"app"`
	Type       string      `json:"type"`
	Plan       string      `json:"plan"`
	Engine     Engine      `json:"engine"`
	Version    string      `json:"version"`
	Password   Secret      `json:"password,omitzero"`
	Settings   Settings    `json:"settings"`
	Status     AddonStatus `json:"status"`
	Members    []Member    `json:"members,omitempty"`
	Entrypoint string      `json:"entrypoint,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
	// RequestID is the idempotency key of the request that created the addon.
	RequestID string `json:"request_id,omitempty"`
	// FleetPassword: see Addon. Zero for an addon created before the fleet
	// credential existed, until the leader gives it one (command 27).
	FleetPassword Secret `json:"fleet_password,omitzero"`
	// NextPassword and OldPassword are a password rotation's
	// (OpRotatePassword): the password being introduced, accepted by the
	// default user beside Password before it is published, then the one
	// it replaced, accepted until the grace period ends. SpecPassword is
	// the password the addon had before its first rotation: the agents'
	// spec hash of a member is made of it (agent/member.go), so a rotation
	// restarts nothing; no member accepts it once rotated away. All three
	// are zero for an addon never rotated.
	NextPassword Secret `json:"next_password,omitzero"`
	OldPassword  Secret `json:"old_password,omitzero"`
	SpecPassword Secret `json:"spec_password,omitzero"`
	// OldPasswordUntil is when OldPassword's grace period ends (set once
	// the rotation published the new URL and told the app; the rotation
	// operation ends there). The leader then retires the old password
	// with an operation of its own, as soon as the addon has no other.
	OldPasswordUntil time.Time `json:"old_password_until,omitzero"`
	// TLSCert is the addon's server certificate (PEM), signed by the
	// cluster CA for its entrypoint and its entrypoint hosts' addresses,
	// and TLSKey its private key; the leader issues and renews them
	// (coordinator/addoncert.go). Empty until the first is issued.
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  Secret `json:"tls_key,omitzero"`
	// Health is what a client would check, computed when the addon is
	// read (never stored): "ok", or "degraded: why" (no master, two
	// masters, a replica not in sync, a member not serving).
	Health string `json:"health,omitempty"`
}

// Redacted returns a copy without its secrets, for list views and logs.
func (a Addon) Redacted() Addon {
	a.Password = Secret{}
	a.FleetPassword = Secret{}
	a.NextPassword, a.OldPassword, a.SpecPassword = Secret{}, Secret{}, Secret{}
	a.TLSKey = Secret{}
	a.Members = append([]Member(nil), a.Members...)
	return a
}

// LogValue names the addon in slog without its secrets.
func (a Addon) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", a.ID), slog.String("app", a.App), slog.String("plan", a.Plan),
		slog.String("status", string(a.Status)))
}

// OperationKind names a durable, stepwise change to an addon.
type OperationKind string

// Operation kinds.
const (
	OpProvision      OperationKind = "provision"
	OpPlanChange     OperationKind = "plan-change"
	OpUpgrade        OperationKind = "upgrade"
	OpSettingsChange OperationKind = "settings-change"
	OpRemove         OperationKind = "remove"
	OpReplaceMember  OperationKind = "replace-member"
	OpBackup         OperationKind = "backup"
	OpRestore        OperationKind = "restore"
)

// OperationState is the progress of an operation or of one of its steps.
type OperationState string

// Operation and step states.
const (
	OpPending OperationState = "pending"
	OpRunning OperationState = "running"
	OpDone    OperationState = "done"
	OpFailed  OperationState = "failed"
	// OpCancelled: an operator cancelled the operation; it stopped at a
	// safe point and its Error says what was done and what was not.
	OpCancelled OperationState = "cancelled"
)

// Finished reports whether the state is final (done, failed or cancelled).
func (s OperationState) Finished() bool {
	return s == OpDone || s == OpFailed || s == OpCancelled
}

// Step is one recorded step of an operation.
type Step struct {
	Name       string         `json:"name"`
	State      OperationState `json:"state"`
	Detail     string         `json:"detail,omitempty"`
	StartedAt  time.Time      `json:"started_at,omitempty"`
	FinishedAt time.Time      `json:"finished_at,omitempty"`
	// Attempts counts how often the step's action (a switchover, a
	// sentinel reset, ...) ran; LastAttempt is when it last did. A step
	// never repeats its action sooner than the operation engine allows.
	Attempts    int       `json:"attempts,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
}

// Operation is a durable, stepwise change to an addon; each step is committed
// as done before the next starts.
type Operation struct {
	ID      string         `json:"id"`
	AddonID string         `json:"addon_id"`
	App     string         `json:"app"`
	Kind    OperationKind  `json:"kind"`
	State   OperationState `json:"state"`
	Steps   []Step         `json:"steps"`
	Error   string         `json:"error,omitempty"`
	// Target is the member a replace-member operation moves away, and
	// Replacement the member that takes its place.
	Target      string `json:"target,omitempty"`
	Replacement string `json:"replacement,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Change says what a plan change (or an engine upgrade) changes, in
	// the words the app hook is told: "plan redis-starter-256 ->
	// redis-starter-1024".
	Change string `json:"change,omitempty"`
	// Upgrade is what an engine upgrade moves to and what it recorded on
	// its way (empty for other kinds).
	Upgrade Upgrade `json:"upgrade,omitzero"`
	// Rotate is what a password rotation records (empty for other kinds).
	Rotate PasswordRotation `json:"rotate,omitzero"`
	// BackupID is the backup a backup or restore operation takes or
	// restores.
	BackupID string `json:"backup_id,omitempty"`
	// Stuck says why the operation cannot make progress (a step waited
	// or failed for too long); it is cleared when it moves again. Stuck
	// operations are counted by the cacheplane_operations_stuck metric.
	Stuck string `json:"stuck,omitempty"`
	// CancelRequested: an operator asked to cancel; the engine stops the
	// operation at its next safe point.
	CancelRequested bool      `json:"cancel_requested,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// CurrentStep returns the index of the first step not done, or len(Steps).
func (o Operation) CurrentStep() int {
	for i, s := range o.Steps {
		if s.State != OpDone {
			return i
		}
	}
	return len(o.Steps)
}

// CoordinatorMember is one member of the coordinator cluster.
type CoordinatorMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	Suffrage string `json:"suffrage,omitempty"`
	Leader   bool   `json:"leader"`
	// Protocol is the highest command protocol level the member's release
	// applies (coordinator.MaxProtocol); 0 when not recorded: a release
	// before levels were recorded, which applies level 1.
	Protocol int `json:"protocol,omitempty"`
	// Release names the member's cacheplane build, when recorded.
	Release string `json:"release,omitempty"`
	// StateKey is the check value of the member's current state key (its
	// id and an HMAC: nothing of the key). The leader seals Raft entries
	// only while every member reports the same.
	StateKey string `json:"state_key,omitempty"`
}

// ClusterStatus is the answer of the members endpoint.
type ClusterStatus struct {
	Members     []CoordinatorMember `json:"members"`
	LeaderID    string              `json:"leader_id,omitempty"`
	AppliedIdx  uint64              `json:"applied_index"`
	ServedBy    string              `json:"served_by"`
	ServedState string              `json:"served_state"`
}

// EnvVar is one environment variable handed to an app.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// SortPlans orders plans by kind (starter first) then memory.
func SortPlans(ps []Plan) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Kind != ps[j].Kind {
			return ps[i].Kind > ps[j].Kind // "starter" > "business"
		}
		return ps[i].MemoryMB < ps[j].MemoryMB
	})
}

// AddonCreateResponse answers an addons-add.
type AddonCreateResponse struct {
	Addon       Addon  `json:"addon"`
	OperationID string `json:"operation_id,omitempty"`
	Message     string `json:"message"`
}

// AddonRemoveResponse answers an addons-remove.
type AddonRemoveResponse struct {
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

// EnvResponse is an app's environment.
type EnvResponse struct {
	App     string   `json:"app"`
	AddonID string   `json:"addon_id"`
	Vars    []EnvVar `json:"vars"`
}

// AddonCAResponse answers addons-ca: the CA certificate (PEM) that signs
// the addon's server certificate, which a client verifies rediss:// with.
type AddonCAResponse struct {
	App     string `json:"app"`
	AddonID string `json:"addon_id"`
	CAPEM   string `json:"ca_pem"`
}

// AddonSettingsResponse answers addons-settings.
type AddonSettingsResponse struct {
	Addon     Addon     `json:"addon"`
	Operation Operation `json:"operation,omitempty"`
	Message   string    `json:"message"`
}

// OperationCancelResponse answers operations-cancel.
type OperationCancelResponse struct {
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

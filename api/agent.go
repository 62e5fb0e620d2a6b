package api

import (
	"log/slog"
	"net"
	"time"
)

// Agent API: the calls an agent makes to any coordinator member (forwarded to
// the leader). Paths:
//
//	POST /v1/agent/register     RegisterRequest  → Host
//	POST /v1/agent/heartbeat    HeartbeatRequest → HeartbeatResponse
//	POST /v1/agent/alive        AliveRequest     → 204 (liveness, 4×/s)
//	GET  /v1/agent/assignments?host=ID&index=N&wait=30s → Assignments
//
// The assignments call is a blocking query (Consul style): it answers at once
// when the FSM index is past N, else when something changes or wait passes.

// RegisterRequest announces a host. Re-registering is idempotent and keeps
// the host's state.
type RegisterRequest struct {
	Host Host `json:"host"`
}

// Validate checks the host fields an agent must send.
func (r *RegisterRequest) Validate() error {
	if err := ValidateMemberID("host", r.Host.ID); err != nil {
		return err
	}
	if r.Host.Address == "" {
		return Invalidf("host %s: address is missing", r.Host.ID)
	}
	if r.Host.MemoryMB <= 0 {
		return Invalidf("host %s: memory_mb must be positive", r.Host.ID)
	}
	if p := r.Host.PublicAddress; p != "" {
		if ip := net.ParseIP(p); ip == nil || ip.IsUnspecified() {
			return Invalidf("host %s: public address %q is not an IP address of the host", r.Host.ID, p)
		}
	}
	return nil
}

// Member states as agents report them.
const (
	MemberPending  = "pending"  // assigned, not started yet
	MemberStarting = "starting" // process up, not answering yet
	MemberRunning  = "running"  // process up and answering (redis PING with auth)
	MemberFailed   = "failed"   // could not start, or exited; Detail says why
	MemberStopped  = "stopped"
	// MemberBusy: the process is alive and accepts connections but does
	// not answer within the probe bound (a long script or command). It is
	// never failed over or restarted for that.
	MemberBusy = "busy"
	// MemberUnresponsive: the process runs but does not serve (its own
	// address refuses connections, or it is frozen); the agent acts on it.
	MemberUnresponsive = "unresponsive"
)

// MemberStatus is one member as its agent sees it.
type MemberStatus struct {
	MemberID  string    `json:"member_id"`
	AddonID   string    `json:"addon_id"`
	Role      Role      `json:"role"`
	State     string    `json:"state"`
	Detail    string    `json:"detail,omitempty"` // reason, with the last log lines on failure
	Pid       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitempty"`
	// Redis only: role as the server reports it (master/slave) and offsets.
	RedisRole  string `json:"redis_role,omitempty"`
	ReplOffset int64  `json:"repl_offset,omitempty"`
	// SpecHash is the hash of the assignment the member runs.
	SpecHash string `json:"spec_hash,omitempty"`
	// Stats are the member's figures (nil while it does not run).
	Stats *MemberReport `json:"stats,omitempty"`
}

// HeartbeatRequest carries a host's member statuses and figures.
type HeartbeatRequest struct {
	HostID  string         `json:"host_id"`
	Members []MemberStatus `json:"members"`
	Stats   *HostReport    `json:"stats,omitempty"`
	// Unknown lists members running on the host that the coordinator did
	// not assign (the agent removes them; this is for the operator's view).
	Unknown []string `json:"unknown,omitempty"`
}

// Validate checks the host id.
func (r *HeartbeatRequest) Validate() error { return ValidateMemberID("host", r.HostID) }

// HeartbeatResponse tells the agent what the coordinator knows of its host.
type HeartbeatResponse struct {
	State HostState `json:"state"`
	// Index is the FSM index; an agent whose last assignments index is
	// lower may re-query at once.
	Index uint64 `json:"index"`
}

// Assignment is one member an agent must run, with everything it needs to
// render the member's configuration. Password (the app's) and FleetPassword
// (the fleet's credential: redisctl.FleetUser on redis members, the
// sentinels' own password) are Secrets; LogValue leaves them out.
type Assignment struct {
	MemberID     string   `json:"member_id"`
	AddonID      string   `json:"addon_id"`
	App          string   `json:"app"`
	Role         Role     `json:"role"`
	Address      string   `json:"address"` // the host address to bind
	Port         int      `json:"port"`
	Engine       Engine   `json:"engine"`
	Version      string   `json:"version"`
	Image        string   `json:"image"`
	PlanMemoryMB int      `json:"plan_memory_mb"`
	Password     Secret   `json:"password"`
	Settings     Settings `json:"settings"`
	// FleetPassword is zero while the addon has none yet (created before
	// the fleet credential existed, not migrated yet: command 27).
	FleetPassword Secret `json:"fleet_password,omitzero"`
	// OtherPasswords are further passwords the default user of a redis
	// member accepts beside Password, while a rotation runs (the next
	// password before it is published, the old one during the grace
	// period): the agent applies them live (agent/fleetauth.go).
	OtherPasswords []Secret `json:"other_passwords,omitempty"`
	// SpecPassword, when set, stands for Password in the member's spec
	// hash (Addon.SpecPassword): a rotation restarts nothing.
	SpecPassword Secret `json:"spec_password,omitzero"`
	// ReplicaOf is the current primary (host:port) for a redis member that
	// must start as a replica; empty for the primary or a starter.
	ReplicaOf string `json:"replica_of,omitempty"`
	// Sentinels of the addon (host:port), for redis members of business
	// plans: a restarting member asks them who the primary is, and an agent
	// that sees the primary's process die forces a failover through them.
	Sentinels []string `json:"sentinels,omitempty"`
	// Sentinel: the monitored primary and the master name (the addon id).
	MasterName string `json:"master_name,omitempty"`
	Primary    string `json:"primary,omitempty"`
	// HAProxy: the entrypoint to serve (the addon's VIP:port on the member
	// that holds it, else the member's own address:port), the redis servers,
	// the connection cap. VIP is set on the holder: the agent makes sure the
	// address is configured on the host (on loopback nothing is needed).
	Entrypoint string   `json:"entrypoint,omitempty"`
	VIP        string   `json:"vip,omitempty"`
	Servers    []string `json:"servers,omitempty"`
	MaxConn    int      `json:"max_conn,omitempty"`
	// TLSCert and TLSKey (HAProxy members, and every member of an addon
	// with member TLS): the addon's server
	// certificate and key, which the entrypoint terminates TLS with;
	// empty while the addon has none yet. A renewed one is swapped in
	// at run time.
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  Secret `json:"tls_key,omitzero"`
	// CACert is the cluster CA (PEM) that signs the addon's certificate,
	// for an addon with member TLS (Settings.MemberTLS): its redis members
	// and sentinels (which then also get TLSCert and TLSKey) verify their
	// peers with it, HAProxy verifies the redis servers with it, and the
	// agent's clients verify the members with it. Empty otherwise.
	CACert string `json:"ca_cert,omitempty"`
	// Stopped: keep the member's process stopped (SIGTERM, so redis saves
	// on its way out) and its data dir; do not restart it until an
	// assignment without Stopped arrives (an engine upgrade that stops
	// every node). Not part of the member's spec.
	Stopped bool `json:"stopped,omitempty"`
}

// LogValue names the assignment in slog without its secrets.
func (a Assignment) LogValue() slog.Value {
	return slog.GroupValue(slog.String("member", a.MemberID), slog.String("addon", a.AddonID),
		slog.String("role", string(a.Role)))
}

// Assignments answers the blocking query.
type Assignments struct {
	HostID      string       `json:"host_id"`
	Index       uint64       `json:"index"`
	Assignments []Assignment `json:"assignments"`
	// Jobs are the backup jobs this host's agent must run (each once).
	Jobs []BackupJob `json:"jobs,omitempty"`
}

// AliveRequest is the agent's liveness signal, sent several times a second
// (much more often than the full heartbeat): the coordinator suspects a
// host lost as soon as these stop, and confirms it by probing the host's
// members before it fails anything over.
type AliveRequest struct {
	HostID string `json:"host_id"`
}

// Validate checks the host id.
func (r *AliveRequest) Validate() error { return ValidateMemberID("host", r.HostID) }

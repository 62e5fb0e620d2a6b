package coordinator

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/backupstore"
)

// DefaultConfigPath is where the coordinator and the CLI look for the
// configuration file when none is named.
const DefaultConfigPath = "/etc/cacheplane/coordinator.json"

// DefaultSocketPath is the admin socket when the config names none.
const DefaultSocketPath = "/run/cacheplane/admin.sock"

// Duration is api.Duration: "500ms" in JSON.
type Duration = api.Duration

// Config is the coordinator daemon's configuration. Every default is in
// DefaultConfig; flags override the file.
type Config struct {
	// ID names this member in the Raft configuration; stable across restarts.
	ID string `json:"id"`
	// DataDir holds raft.db (log + stable store) and snapshots/.
	DataDir string `json:"data_dir"`
	// RaftAddr is the address Raft binds and advertises (host:port).
	RaftAddr string `json:"raft_addr"`
	// HTTPAddr is the peer API: forwarded requests and joins (host:port).
	HTTPAddr string `json:"http_addr"`
	// Socket is the admin socket path (mode 0600).
	Socket string `json:"socket"`
	// DashboardListen is the web dashboard's address (host:port; package
	// dashboard), loopback by default: reach it through an SSH tunnel.
	// "" turns it off. An address in use is logged, not fatal.
	DashboardListen string `json:"dashboard_listen"`
	// Bootstrap makes this member form a new 1-member cluster when it has no
	// Raft state yet. Harmless on restart. Leave off on members that join.
	Bootstrap bool `json:"bootstrap"`
	// ClusterToken (or ClusterTokenFile, read by Validate) is the token of
	// the releases before identities. It serves only while this member has
	// no member certificate in a cluster made before identities: plain
	// HTTP requests of older members and agents must carry it, and this
	// member sends it on its own plaintext calls. Once secured it is
	// ignored (docs/security.md).
	ClusterToken     string `json:"cluster_token,omitempty"`
	ClusterTokenFile string `json:"cluster_token_file,omitempty"`
	// AgentCertTTL is how long an agent certificate is valid; the agent
	// renews it after two thirds. MemberCertTTL is a coordinator's.
	AgentCertTTL  Duration `json:"agent_cert_ttl"`
	MemberCertTTL Duration `json:"member_cert_ttl"`
	// EnvPrefix names the second URL variable: <PREFIX>_REDIS_URL.
	EnvPrefix string `json:"env_prefix"`
	// Raft timing. The defaults suit a LAN: a dead leader is replaced in
	// about one to two seconds.
	HeartbeatTimeout   Duration `json:"heartbeat_timeout"`
	ElectionTimeout    Duration `json:"election_timeout"`
	LeaderLeaseTimeout Duration `json:"leader_lease_timeout"`
	SnapshotInterval   Duration `json:"snapshot_interval"`
	SnapshotThreshold  uint64   `json:"snapshot_threshold"`
	// HostDownAfter marks a host down when its agent has not sent a
	// heartbeat for this long.
	HostDownAfter Duration `json:"host_down_after"`
	// HostSuspectAfter: a host whose agent's liveness signal (every 250 ms)
	// stopped this long is probed; when none of its members accepts a
	// connection it is lost, marked down at once, and its primaries fail
	// over. 0, or a value not below host_down_after, leaves only
	// host_down_after.
	HostSuspectAfter Duration `json:"host_suspect_after"`
	// EntrypointCIDR is the pool of virtual IPs for addons'
	// entrypoints (e.g. "10.0.9.0/24"; dev mode uses "127.0.1.0/24"). The
	// holder haproxy binds its addon's VIP; the coordinator moves it to the
	// other haproxy when the holder's host is down or draining. Empty: the
	// entrypoint is the first haproxy's own address (no entrypoint failover).
	EntrypointCIDR string `json:"entrypoint_cidr,omitempty"`
	// EntrypointMode is the entrypoint mode of new addons: "haproxy"
	// (default) or "kernel" (api.Settings.Entrypoint; an addon changes
	// its own with addons-settings --entrypoint).
	EntrypointMode string `json:"entrypoint_mode,omitempty"`
	// MemberTLS is whether new addons get member TLS when addons-add does
	// not say (api.Settings.MemberTLS; off by default).
	MemberTLS bool `json:"member_tls,omitempty"`
	// HealAfter is how long a host stays down before its members are
	// replaced on other hosts.
	HealAfter Duration `json:"heal_after"`
	// HealParallel bounds the replace operations (healing and drain moves)
	// running at once across the fleet; each addon has at most one.
	HealParallel int `json:"heal_parallel"`
	// ApplyTimeout bounds one write through Raft.
	ApplyTimeout Duration `json:"apply_timeout"`
	// AppHookCommand is run (argv, no shell) on the leader after a plan
	// change (or an engine upgrade) of an addon, with CACHEPLANE_ADDON_ID,
	// CACHEPLANE_APP, CACHEPLANE_CHANGE ("plan redis-starter-256 ->
	// redis-starter-1024"), CACHEPLANE_OPERATION_ID and REDIS_URL in its
	// environment; exit 0 is success. AppHookURL is POSTed the same as
	// JSON (api.AppHookEvent); a 2xx answer is success. Either, both or
	// neither may be set; set them alike on every member (the leader runs
	// them). A hook may run more than once for one change: make it
	// idempotent.
	AppHookCommand []string `json:"app_hook_command,omitempty"`
	AppHookURL     string   `json:"app_hook_url,omitempty"`
	// AppHookTimeout bounds one attempt; a failing hook is tried
	// AppHookAttempts times, AppHookRetryAfter apart. After the last
	// failure the operation records that the app was not told and
	// finishes: the change itself is done.
	AppHookTimeout    Duration `json:"app_hook_timeout"`
	AppHookAttempts   int      `json:"app_hook_attempts"`
	AppHookRetryAfter Duration `json:"app_hook_retry_after"`
	// PasswordGrace is how long a password rotation keeps the old
	// password accepted after the new URL is published and the app told,
	// unless addons-password-rotate names another (--grace) or ends it
	// (--finish). Default 24h.
	PasswordGrace Duration `json:"password_grace"`
	// AddonCertTTL is how long an addon's server certificate (its
	// entrypoint's TLS) is valid; the leader renews it once two thirds
	// have passed (addoncert.go). Default (and 0) 90 days.
	AddonCertTTL Duration `json:"addon_cert_ttl"`
	// LogLevel is debug, info, warn or error; logs are JSON on stderr.
	LogLevel string `json:"log_level"`

	// BackupStore is where backups are stored (backupstore.Config): by
	// default a local directory, <data_dir>/backups. The agents write into
	// it (the store's configuration travels in each backup job) and every
	// coordinator reads from it for downloads: with several coordinators,
	// or agents on several machines, a local store must be a directory
	// they all share (the same path on each, e.g. an NFS mount); else use
	// an S3-compatible bucket ({"kind": "s3", "endpoint": "host:port",
	// "bucket": ..., "access_key": ..., "secret_key": ...}).
	BackupStore backupstore.Config `json:"backup_store"`
	// BackupKeysFile holds the keyring backups are encrypted with
	// (backupstore.Keyring as JSON: {"current": ID, "keys": {ID:
	// "AGE-SECRET-KEY-1..."}}, mode 0600); default
	// <data_dir>/backup-keys.json. A coordinator that finds no file makes
	// one with a new key. Every coordinator of a cluster must use the same
	// keys: start the first one, then copy its file (0600) to the others
	// before they start, or point them all at one shared file. Losing the
	// file loses every backup sealed with its keys: keep a copy apart.
	BackupKeysFile string `json:"backup_keys_file"`
	// StateKeysFile holds the keys that seal this member's Raft log
	// entries and snapshots, which hold every addon's password
	// ({"current": ID, "keys": {ID: base64 of 32 bytes}}, mode 0600),
	// made with a new key when missing. Unset: nothing is sealed (a
	// warning at start). Every coordinator of a cluster must hold the same
	// keys (copy the first member's file to the others before they start;
	// a member with other keys is refused at join): the leader seals only
	// once every member reports the same current key, and logs why not
	// until then.
	StateKeysFile string `json:"state_keys_file"`
	// BackupSchedule is when periodic backups are taken (package backup):
	// by default daily at 01:00 Europe/Paris, starts spread over 2h, at
	// most 2 dumps at a time per host, a failed dump retried every 10m
	// (that day only).
	BackupSchedule BackupScheduleConfig `json:"backup_schedule"`
	// BackupJobTimeout fails a backup or restore whose agent reported
	// nothing this long after its job was listed.
	BackupJobTimeout Duration `json:"backup_job_timeout"`
	// BackupCheckEvery is how often the leader looks for due backups
	// (it also looks at once when it takes over).
	BackupCheckEvery Duration `json:"backup_check_every"`
}

// BackupScheduleConfig is backup.Schedule as the config file spells it
// (durations as "2h").
type BackupScheduleConfig struct {
	// Spec is a five-field cron spec read in TZ ("0 1 * * *"), or six
	// with seconds first.
	Spec       string   `json:"spec"`
	TZ         string   `json:"tz"`
	Window     Duration `json:"window"`
	PerHost    int      `json:"per_host"`
	RetryEvery Duration `json:"retry_every"`
}

// Schedule is the backup.Schedule it describes.
func (b BackupScheduleConfig) Schedule() backup.Schedule {
	return backup.Schedule{Spec: b.Spec, TZ: b.TZ, Window: time.Duration(b.Window), PerHost: b.PerHost, RetryEvery: time.Duration(b.RetryEvery)}
}

// DefaultConfig returns every default.
func DefaultConfig() Config {
	return Config{
		ID:                 hostnameOr("coordinator-1"),
		DataDir:            "/var/lib/cacheplane/coordinator",
		RaftAddr:           "127.0.0.1:7400",
		HTTPAddr:           "127.0.0.1:7401",
		Socket:             DefaultSocketPath,
		DashboardListen:    "127.0.0.1:7480",
		EnvPrefix:          "CACHEPLANE",
		HeartbeatTimeout:   Duration(500 * time.Millisecond),
		ElectionTimeout:    Duration(500 * time.Millisecond),
		LeaderLeaseTimeout: Duration(250 * time.Millisecond),
		SnapshotInterval:   Duration(2 * time.Minute),
		SnapshotThreshold:  8192,
		ApplyTimeout:       Duration(10 * time.Second),
		AgentCertTTL:       Duration(30 * 24 * time.Hour),
		MemberCertTTL:      Duration(365 * 24 * time.Hour),
		AppHookTimeout:     Duration(10 * time.Second),
		AppHookAttempts:    3,
		AppHookRetryAfter:  Duration(5 * time.Second),
		PasswordGrace:      Duration(24 * time.Hour),
		AddonCertTTL:       Duration(90 * 24 * time.Hour),
		HostDownAfter:      Duration(5 * time.Second),
		HostSuspectAfter:   Duration(time.Second),
		HealAfter:          Duration(30 * time.Second),
		HealParallel:       4,
		LogLevel:           "info",
		BackupStore:        backupstore.Config{Kind: backupstore.KindLocal},
		BackupSchedule: BackupScheduleConfig{Spec: backup.DefaultSpec, TZ: backup.DefaultTZ, Window: Duration(backup.DefaultWindow),
			PerHost: backup.DefaultPerHost, RetryEvery: Duration(backup.DefaultRetryEvery)},
		BackupJobTimeout: Duration(30 * time.Minute),
		BackupCheckEvery: Duration(30 * time.Second),
	}
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

// LoadConfigFile reads a JSON config file over the defaults. A missing file
// at the default path is not an error; a missing named file is.
func LoadConfigFile(path string, explicit bool) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) && !explicit {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read config %s: %w", path, err)
	}
	if err := api.Decode(strings.NewReader(string(data)), &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %s", path, api.Message(err))
	}
	return cfg, nil
}

// Validate checks the config.
func (c *Config) Validate() error {
	if err := api.ValidateMemberID("coordinator", c.ID); err != nil {
		return fmt.Errorf("config: %s", api.Message(err))
	}
	if c.DataDir == "" {
		return fmt.Errorf("config: data_dir is empty")
	}
	if err := api.ValidateHostPort("raft_addr", c.RaftAddr); err != nil {
		return fmt.Errorf("config: %s", api.Message(err))
	}
	if err := api.ValidateHostPort("http_addr", c.HTTPAddr); err != nil {
		return fmt.Errorf("config: %s", api.Message(err))
	}
	if c.DashboardListen != "" {
		if err := api.ValidateHostPort("dashboard_listen", c.DashboardListen); err != nil {
			return fmt.Errorf("config: %s", api.Message(err))
		}
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.DataDir, "admin.sock")
	}
	if c.ClusterToken == "" && c.ClusterTokenFile != "" {
		b, err := os.ReadFile(c.ClusterTokenFile)
		if err != nil {
			return fmt.Errorf("config: cluster_token_file: %w", err)
		}
		c.ClusterToken = strings.TrimSpace(string(b))
	}
	if c.AgentCertTTL < Duration(10*time.Second) || c.MemberCertTTL < Duration(time.Hour) {
		return fmt.Errorf("config: agent_cert_ttl must be at least 10s and member_cert_ttl at least 1h")
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 {
		return fmt.Errorf("config: raft timeouts must be positive")
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return fmt.Errorf("config: leader_lease_timeout (%s) must not exceed heartbeat_timeout (%s)",
			time.Duration(c.LeaderLeaseTimeout), time.Duration(c.HeartbeatTimeout))
	}
	if c.HostDownAfter <= 0 {
		return fmt.Errorf("config: host_down_after must be positive")
	}
	if c.EntrypointCIDR != "" {
		if _, err := netip.ParsePrefix(c.EntrypointCIDR); err != nil {
			return fmt.Errorf("config: entrypoint_cidr %q: %v", c.EntrypointCIDR, err)
		}
	}
	if err := api.ValidateEntrypointMode(c.EntrypointMode); err != nil {
		return fmt.Errorf("config: entrypoint_mode: %v", err)
	}
	if c.HostSuspectAfter < 0 {
		return fmt.Errorf("config: host_suspect_after must not be negative (0 turns the fast lost-host path off)")
	}
	if c.HealAfter < 0 {
		return fmt.Errorf("config: heal_after must not be negative")
	}
	if c.HealParallel < 1 {
		return fmt.Errorf("config: heal_parallel must be at least 1 (it bounds the replace operations running at once)")
	}
	if c.ApplyTimeout <= 0 {
		return fmt.Errorf("config: apply_timeout must be positive")
	}
	if c.EnvPrefix == "" {
		return fmt.Errorf("config: env_prefix is empty")
	}
	if err := c.validateAppHook(); err != nil {
		return err
	}
	if c.PasswordGrace < 0 || time.Duration(c.PasswordGrace) > api.MaxPasswordGrace {
		return fmt.Errorf("config: password_grace %s: use 0 to %s", time.Duration(c.PasswordGrace), api.MaxPasswordGrace)
	}
	if c.AddonCertTTL != 0 && time.Duration(c.AddonCertTTL) < MinAddonCertTTL {
		return fmt.Errorf("config: addon_cert_ttl %s: use at least %s", time.Duration(c.AddonCertTTL), MinAddonCertTTL)
	}
	if err := c.validateBackups(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: use debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// validateAppHook checks the app hook settings. A message never repeats
// the URL: it may hold credentials or a secret path.
func (c *Config) validateAppHook() error {
	if len(c.AppHookCommand) > 0 {
		if strings.TrimSpace(c.AppHookCommand[0]) == "" {
			return fmt.Errorf("config: app_hook_command: the program (first element) is empty")
		}
		if _, err := exec.LookPath(c.AppHookCommand[0]); err != nil {
			return fmt.Errorf("config: app_hook_command: %s is not an executable file (or not in PATH)", c.AppHookCommand[0])
		}
	}
	if c.AppHookURL != "" {
		u, err := url.Parse(c.AppHookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: app_hook_url: want an http:// or https:// URL with a host")
		}
	}
	if c.AppHookTimeout <= 0 {
		return fmt.Errorf("config: app_hook_timeout must be positive")
	}
	if c.AppHookAttempts < 1 {
		return fmt.Errorf("config: app_hook_attempts must be at least 1")
	}
	if c.AppHookRetryAfter < 0 {
		return fmt.Errorf("config: app_hook_retry_after must not be negative")
	}
	return nil
}

// validateBackups fills the backup paths from data_dir and checks the
// backup settings. No message quotes a secret.
func (c *Config) validateBackups() error {
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("config: data_dir %s: %w", c.DataDir, err)
	}
	st := &c.BackupStore
	if (st.Kind == "" || st.Kind == backupstore.KindLocal) && st.Dir == "" && st.Endpoint == "" && st.Bucket == "" {
		st.Kind, st.Dir = backupstore.KindLocal, filepath.Join(dataDir, "backups")
	}
	if st.Kind == backupstore.KindLocal && st.Dir != "" && !filepath.IsAbs(st.Dir) {
		if st.Dir, err = filepath.Abs(st.Dir); err != nil {
			return fmt.Errorf("config: backup_store: dir: %w", err)
		}
	}
	if err := st.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.BackupKeysFile == "" {
		c.BackupKeysFile = filepath.Join(dataDir, "backup-keys.json")
	}
	if c.BackupKeysFile, err = filepath.Abs(c.BackupKeysFile); err != nil {
		return fmt.Errorf("config: backup_keys_file: %w", err)
	}
	if c.StateKeysFile != "" {
		if c.StateKeysFile, err = filepath.Abs(c.StateKeysFile); err != nil {
			return fmt.Errorf("config: state_keys_file: %w", err)
		}
	}
	if err := c.BackupSchedule.Schedule().Validate(); err != nil {
		return fmt.Errorf("config: backup_schedule: %w", err)
	}
	if c.BackupJobTimeout <= 0 {
		return fmt.Errorf("config: backup_job_timeout must be positive (it fails a backup or restore whose agent stays silent; default 30m)")
	}
	if c.BackupCheckEvery <= 0 {
		return fmt.Errorf("config: backup_check_every must be positive (default 30s)")
	}
	return nil
}

package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v3/mem"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

// DefaultConfigPath is where cacheplane-agent looks for its configuration
// file when none is named.
const DefaultConfigPath = "/etc/cacheplane/agent.json"

// Duration is api.Duration: "500ms" in JSON.
type Duration = api.Duration

// Config is the agent daemon's configuration. Every default is in
// DefaultConfig; flags override the file; Validate fills what is derived
// (namespace, memory, token) and checks the rest.
type Config struct {
	// HostID names this host in the fleet; stable across restarts.
	HostID string `json:"host_id"`
	// Address is the host's address: members bind to it and the
	// coordinator hands it out in entrypoints and replication links.
	Address string `json:"address"`
	// PublicAddress is the host's address on the internet side (empty:
	// none): the entrypoint of an addon with internet access is also
	// published there (access.go). Reported at registration.
	PublicAddress string `json:"public_address,omitempty"`
	// Labels describe the host to the scheduler; "zone" spreads members.
	Labels map[string]string `json:"labels,omitempty"`
	// MemoryMB is the memory the scheduler may place on this host; 0 means
	// detect (the host's total memory).
	MemoryMB int `json:"memory_mb"`
	// Coordinators are peer API addresses (host:port) of coordinator
	// members. Any member forwards to the leader; the agent moves to the
	// next address when one cannot be reached.
	Coordinators []string `json:"coordinators"`
	// JoinToken (cacheplane hosts-token) gets the agent its certificate
	// on first start; once <data_dir>/identity holds one, it is not used
	// again. JoinTokenFile reads it from a file.
	JoinToken     string `json:"join_token,omitempty"`
	JoinTokenFile string `json:"join_token_file,omitempty"`
	// ClusterToken and ClusterTokenFile are ignored (older configuration
	// files load): the agent authenticates with its certificate.
	ClusterToken     string `json:"cluster_token,omitempty"`
	ClusterTokenFile string `json:"cluster_token_file,omitempty"`
	// DataDir holds members/<member-id>/ (configs, 0600, and data) and
	// logs/ (each member's stdout and stderr).
	DataDir string `json:"data_dir"`
	// ContainerdSocket is containerd's address.
	ContainerdSocket string `json:"containerd_socket"`
	// Namespace is this agent's containerd namespace; empty means
	// "cacheplane-<host_id>".
	Namespace string `json:"namespace"`
	// ImageDir holds the locally built images (packaging/, `make images`);
	// missing images are imported from it.
	ImageDir string `json:"image_dir"`
	// HeartbeatInterval is how often the agent reports its members.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	// StatsInterval is how often the agent measures its host's and
	// members' figures (CPU, memory, swap, disk); the heartbeats in between
	// carry the last ones. 0 measures at every heartbeat.
	StatsInterval Duration `json:"stats_interval"`
	// AliveInterval is how often the agent sends its liveness signal (a
	// tiny request; the coordinator suspects the host lost when it stops).
	// 0 turns it off.
	AliveInterval Duration `json:"alive_interval"`
	// AssignmentsWait is how long one blocking assignments query may wait.
	AssignmentsWait Duration `json:"assignments_wait"`
	// RestartDelay is how long an assigned member that exited stays down
	// before the agent starts it again; it doubles (up to MaxRestartDelay)
	// while the member keeps failing. It is also the window in which the
	// coordinator may fail an HA addon over and re-assign the member as a
	// replica before it comes back.
	RestartDelay    Duration `json:"restart_delay"`
	MaxRestartDelay Duration `json:"max_restart_delay"`
	// LogLevel is debug, info, warn or error; logs are JSON on stderr.
	LogLevel string `json:"log_level"`
	// MetricsAddr is where GET /metrics (Prometheus text format) listens:
	// host:port, or ":port" for a loopback address of this host (Address
	// itself when it is a loopback address, so several agents on one
	// machine do not collide; 127.0.0.1 otherwise). "" or "off" disables
	// it. Validate resolves ":port" into host:port.
	MetricsAddr string `json:"metrics_addr"`
	// PromoteMaxLagBytes bounds how far behind its primary (replication
	// offset, bytes) a replica on this host may be and still be promoted
	// by Sentinel (agent/promoteguard.go); 0 means
	// redisctl.DefaultPromoteMaxLagBytes.
	PromoteMaxLagBytes int64 `json:"promote_max_lag_bytes,omitempty"`
}

// DefaultMetricsPort is the agent's /metrics port unless configured.
const DefaultMetricsPort = 9412

// DefaultConfig returns every default.
func DefaultConfig() Config {
	return Config{
		HostID:            hostnameOr("host-1"),
		Address:           "127.0.0.1",
		Coordinators:      []string{"127.0.0.1:7401"},
		DataDir:           "/var/lib/cacheplane/agent",
		ContainerdSocket:  runtime.DefaultSocket,
		ImageDir:          "/usr/share/cacheplane/images",
		HeartbeatInterval: Duration(time.Second),
		StatsInterval:     Duration(5 * time.Second),
		AliveInterval:     Duration(250 * time.Millisecond),
		AssignmentsWait:   Duration(30 * time.Second),
		RestartDelay:      Duration(2 * time.Second),
		MaxRestartDelay:   Duration(time.Minute),
		LogLevel:          "info",
		MetricsAddr:       ":" + strconv.Itoa(DefaultMetricsPort),
	}
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && api.ValidateMemberID("host", h) == nil {
		return h
	}
	return def
}

// LoadConfigFile reads a JSON config file over the defaults. A missing file
// at the default path is not an error; a missing named file is.
func LoadConfigFile(path string, explicit bool) (Config, error) {
	cfg := DefaultConfig()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) && !explicit {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read config %s: %w", path, err)
	}
	defer f.Close()
	if err := api.Decode(f, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %s", path, api.Message(err))
	}
	return cfg, nil
}

// Validate checks the config and fills the derived fields: Namespace,
// MemoryMB (detected when 0) and JoinToken (from JoinTokenFile).
func (c *Config) Validate() error {
	if err := api.ValidateMemberID("host", c.HostID); err != nil {
		return fmt.Errorf("config: %s", api.Message(err))
	}
	ip := net.ParseIP(c.Address)
	if ip == nil || ip.IsUnspecified() {
		return fmt.Errorf("config: address %q must be the host's own IP address (members bind to it)", c.Address)
	}
	if c.PublicAddress != "" {
		if ip := net.ParseIP(c.PublicAddress); ip == nil || ip.IsUnspecified() || c.PublicAddress == c.Address {
			return fmt.Errorf("config: public_address %q must be another IP address of this host than address", c.PublicAddress)
		}
	}
	for k, v := range c.Labels {
		if k == "" || strings.ContainsAny(k, "= \t\n") || strings.ContainsAny(v, "\t\n") {
			return fmt.Errorf("config: label %q=%q: keys are non-empty without '=' or spaces", k, v)
		}
	}
	if len(c.Coordinators) == 0 {
		return fmt.Errorf("config: coordinators is empty: give at least one coordinator peer address (host:port)")
	}
	for _, a := range c.Coordinators {
		if err := api.ValidateHostPort("coordinator address", a); err != nil {
			return fmt.Errorf("config: %s", api.Message(err))
		}
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("config: data_dir %q must be an absolute path", c.DataDir)
	}
	if c.ImageDir != "" && !filepath.IsAbs(c.ImageDir) {
		return fmt.Errorf("config: image_dir %q must be an absolute path", c.ImageDir)
	}
	if c.ContainerdSocket == "" {
		return fmt.Errorf("config: containerd_socket is empty")
	}
	if c.Namespace == "" {
		c.Namespace = "cacheplane-" + c.HostID
	}
	if err := api.ValidateMemberID("containerd namespace", c.Namespace); err != nil {
		return fmt.Errorf("config: %s", api.Message(err))
	}
	if c.HeartbeatInterval <= 0 {
		return fmt.Errorf("config: heartbeat_interval must be positive")
	}
	if c.StatsInterval < 0 {
		return fmt.Errorf("config: stats_interval must not be negative")
	}
	if c.AssignmentsWait <= 0 {
		return fmt.Errorf("config: assignments_wait must be positive")
	}
	if c.RestartDelay <= 0 || c.MaxRestartDelay < c.RestartDelay {
		return fmt.Errorf("config: restart_delay must be positive and at most max_restart_delay")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: use debug, info, warn or error", c.LogLevel)
	}
	if c.JoinToken == "" && c.JoinTokenFile != "" {
		b, err := os.ReadFile(c.JoinTokenFile)
		if err != nil {
			return fmt.Errorf("config: join_token_file: %w", err)
		}
		c.JoinToken = strings.TrimSpace(string(b))
	}
	if err := c.resolveMetricsAddr(); err != nil {
		return err
	}
	if c.MemoryMB < 0 {
		return fmt.Errorf("config: memory_mb %d must not be negative (0 = detect)", c.MemoryMB)
	}
	if c.MemoryMB == 0 {
		mb, err := DetectMemoryMB(context.Background())
		if err != nil {
			return fmt.Errorf("config: memory_mb is 0 and detection failed (set it): %w", err)
		}
		c.MemoryMB = mb
	}
	return nil
}

// MetricsEnabled reports whether the agent serves /metrics.
func (c *Config) MetricsEnabled() bool { return c.MetricsAddr != "" && c.MetricsAddr != "off" }

// resolveMetricsAddr checks MetricsAddr and gives ":port" its host: the
// agent's Address when that is a loopback address, else 127.0.0.1 (the
// figures stay on the machine unless an operator names an address).
func (c *Config) resolveMetricsAddr() error {
	if !c.MetricsEnabled() {
		return nil
	}
	host, port, err := net.SplitHostPort(c.MetricsAddr)
	if err != nil {
		return fmt.Errorf("config: metrics_addr %q: want host:port, :port, or \"off\": %w", c.MetricsAddr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("config: metrics_addr %q: bad port", c.MetricsAddr)
	}
	if host == "" {
		host = "127.0.0.1"
		if ip := net.ParseIP(c.Address); ip != nil && ip.IsLoopback() {
			host = c.Address
		}
		c.MetricsAddr = net.JoinHostPort(host, port)
	} else if net.ParseIP(host) == nil {
		return fmt.Errorf("config: metrics_addr %q: the host must be an IP address", c.MetricsAddr)
	}
	return nil
}

// DetectMemoryMB returns the host's total memory in MiB.
func DetectMemoryMB(ctx context.Context) (int, error) {
	v, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("detect memory: %w", err)
	}
	if v.Total < 1<<20 {
		return 0, fmt.Errorf("detect memory: total %d bytes is implausible", v.Total)
	}
	return int(v.Total >> 20), nil
}

// ParseLabels reads "k=v" pairs (flags) into a map.
func ParseLabels(pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", p)
		}
		out[k] = v
	}
	return out, nil
}

// labelList is Labels as sorted k=v pairs, for logs.
func (c *Config) labelList() []string {
	out := make([]string, 0, len(c.Labels))
	for k, v := range c.Labels {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

package runtime

import (
	"context"
	"errors"
	"time"
)

// Spec is what to run as one member container.
type Spec struct {
	// ID names the container; unique per agent, a containerd identifier
	// ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 76 characters).
	ID string
	// Addon, Member and Role are stored as labels, so List can rebuild the
	// agent's view after a restart.
	Addon, Member, Role string
	// Image is the image reference, e.g. api.ImageRedis7.
	Image string
	// Args is the full argv; Args[0] is the binary inside the image.
	Args []string
	// Env is added to the image's environment ("KEY=value").
	Env []string
	// DataDir, if set, is a host directory bind-mounted read-write at the
	// same path inside (created if missing).
	DataDir string
	// ExtraMounts are further bind mounts (configs, sockets).
	ExtraMounts []Mount
	// MemoryLimitBytes is the cgroup memory limit; 0 = none. The swap
	// limit is set equal, so the member can never swap.
	MemoryLimitBytes int64
	// Labels are stored on the container next to the driver's own
	// (which they cannot override).
	Labels map[string]string
	// SpecHash identifies everything a change of which needs a restart.
	// Start with the same hash on a running member is a no-op; with a
	// different hash it replaces the member. It must not cover
	// MemoryLimitBytes, which UpdateResources changes live.
	SpecHash string
	// NoFileLimit is RLIMIT_NOFILE (soft and hard); 0 = DefaultNoFileLimit,
	// or the agent's own hard limit if lower (runc cannot raise it above
	// containerd's without CAP_SYS_RESOURCE).
	NoFileLimit uint64
}

// Mount is a bind mount of a host path.
type Mount struct {
	Source, Destination string
	ReadOnly            bool
}

// DefaultNoFileLimit is the open-files limit when Spec.NoFileLimit is 0:
// enough for redis's default maxclients (10000) plus its own descriptors.
const DefaultNoFileLimit = 65536

// State of a member container.
type State string

// States.
const (
	StateRunning State = "running" // the task's process is alive
	StateStopped State = "stopped" // the container exists, no live process
	StateMissing State = "missing" // no such container
)

// Status is what a driver knows about one container. All of it comes from
// the runtime's own state, so a new driver instance reports the same.
type Status struct {
	ID                  string
	Addon, Member, Role string
	Image               string
	State               State
	// ExitCode is the last exit status when stopped, -1 if unknown.
	ExitCode int
	ExitedAt time.Time
	// Pid is the host pid of the member's process when running.
	Pid int
	// StartedAt is when the driver last started the task.
	StartedAt time.Time
	Labels    map[string]string
	SpecHash  string
	// MemoryLimitBytes is the stored limit (0 = none), as last set by Start
	// or UpdateResources.
	MemoryLimitBytes int64
}

// Exit reports that a member's process died without the driver stopping it.
type Exit struct {
	ID       string
	Pid      int
	ExitCode int
	At       time.Time
}

// Stats are a member's resource figures at one moment.
type Stats struct {
	// CPUUsageNanos is cumulative CPU time; CPU % needs two samples.
	CPUUsageNanos uint64
	// MemoryBytes is the cgroup's usage (cgroup v1 includes page cache).
	MemoryBytes uint64
	// MemoryMaxBytes is the peak usage (cgroup v1 only; 0 otherwise).
	MemoryMaxBytes uint64
	// RSSBytes is anonymous memory (v1 total_rss, v2 anon).
	RSSBytes uint64
	// MemoryLimitBytes is the limit in force; 0 = none.
	MemoryLimitBytes uint64
	// SwapBytes is swap in use.
	SwapBytes uint64
	// SwapLimitBytes is the memory+swap limit (OCI semantics); equal to
	// MemoryLimitBytes when the member cannot swap; 0 = none.
	SwapLimitBytes uint64
	At             time.Time
}

// Runtime runs member containers. Every method is safe for concurrent use
// on different IDs; all state lives in the runtime, not in the value.
type Runtime interface {
	// EnsureImage makes ref available: present, or imported from the
	// driver's image directory. The error names ref otherwise.
	EnsureImage(ctx context.Context, ref string) error
	// Start runs spec. Idempotent: a running container with the same
	// SpecHash is left alone (re-attached after an agent restart); a
	// stopped one, or one with another SpecHash, is replaced.
	Start(ctx context.Context, spec Spec) error
	// Stop sends SIGTERM, waits up to grace, then SIGKILL. A missing
	// container or task counts as stopped. The container stays (Inspect
	// shows its exit code); Exits does not report this exit.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Destroy kills the process and removes the container and its root
	// filesystem; missing = ok. Data dirs and logs are left alone.
	Destroy(ctx context.Context, id string) error
	// Inspect reports one container; a missing one is StateMissing, not
	// an error.
	Inspect(ctx context.Context, id string) (Status, error)
	// List reports every container of this agent (used to recover after
	// an agent restart).
	List(ctx context.Context) ([]Status, error)
	// UpdateResources changes the memory (and swap) limit of a container,
	// live on a running process and in the stored spec; 0 = none. The
	// kernel refuses a limit below current usage.
	UpdateResources(ctx context.Context, id string, memoryLimitBytes int64) error
	// Stats reads a running member's resource figures.
	Stats(ctx context.Context, id string) (Stats, error)
	// LastLogLines returns up to n last lines the member's process wrote
	// to stdout/stderr since it was last started by Start.
	LastLogLines(id string, n int) ([]string, error)
	// Exits reports deaths of member processes this driver did not cause
	// (a certain death: the agent may force a failover at once), each
	// once. A crash or restart of the runtime itself is no death. The
	// agent must keep draining it (a full channel holds up the watcher);
	// Close closes it.
	Exits() <-chan Exit
	// Close releases the driver for agent shutdown. It never stops a task.
	Close() error
}

// Sentinel errors, wrapped with context.
var (
	// ErrNotFound: no such container (or no running task for Stats).
	ErrNotFound = errors.New("not found")
	// ErrImageNotFound: the image is neither present nor importable.
	ErrImageNotFound = errors.New("image not found")
	// ErrInvalidSpec: the Spec cannot be run as given.
	ErrInvalidSpec = errors.New("invalid spec")
)

package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd"
	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cacheplane/cacheplane/packaging"
)

// Labels the driver keeps on every container: what a restarted agent needs.
const (
	LabelAddon     = "cacheplane.addon"
	LabelMember    = "cacheplane.member"
	LabelRole      = "cacheplane.role"
	LabelSpecHash  = "cacheplane.spec-hash"
	LabelStartedAt = "cacheplane.started-at"
)

// DefaultSocket is containerd's default socket.
const DefaultSocket = "/run/containerd/containerd.sock"

// Defaults of Config.
const (
	DefaultSnapshotter = "overlayfs"
	DefaultCallTimeout = 30 * time.Second
	// DefaultReplaceGrace is the SIGTERM grace when Start replaces a
	// running container whose SpecHash changed.
	DefaultReplaceGrace = 10 * time.Second
	// importTimeout bounds an image import and unpack.
	importTimeout = 2 * time.Minute
	// reconcileEvery is how often the exit watcher double-checks the tasks
	// it believes running, in case an exit event was missed (containerd
	// restarted, subscription re-established).
	reconcileEvery = 10 * time.Second
)

// Config configures the containerd driver.
type Config struct {
	// Socket is containerd's address; DefaultSocket if empty.
	Socket string
	// Namespace is this agent's containerd namespace (required); every
	// container, image and snapshot of the agent lives in it.
	Namespace string
	// ImageDir holds images built by packaging (images.json and tarballs);
	// EnsureImage imports from it. Empty: never import.
	ImageDir string
	// LogDir receives each task's stdout/stderr as <ID>.log (required).
	LogDir string
	// Snapshotter; DefaultSnapshotter if empty.
	Snapshotter string
	// CallTimeout bounds each call to containerd; DefaultCallTimeout if 0.
	CallTimeout time.Duration
	// CgroupRoot is where leftover empty cgroups are removed from;
	// /sys/fs/cgroup if empty.
	CgroupRoot string
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
}

// Containerd is the containerd driver of Runtime.
type Containerd struct {
	cfg    Config
	client *containerd.Client
	log    *slog.Logger

	imageMu sync.Mutex

	mu       sync.Mutex
	running  map[string]uint32    // tasks believed running: id -> pid
	expected map[string]uint32    // exits the driver causes: id -> pid
	reported map[string]uint32    // last exit reported: id -> pid
	limits   map[string]specLimit // memory limit of each container's spec (memoryLimit)

	exits     chan Exit
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ Runtime = (*Containerd)(nil)

// specLimit is a container's memory limit as of its record's UpdatedAt.
type specLimit struct {
	at    time.Time
	bytes int64
}

// NewContainerd connects to containerd and starts watching task exits.
func NewContainerd(ctx context.Context, cfg Config) (*Containerd, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = DefaultSnapshotter
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Namespace == "" {
		return nil, errors.New("containerd runtime: Config.Namespace is required")
	}
	if cfg.LogDir == "" || !filepath.IsAbs(cfg.LogDir) {
		return nil, fmt.Errorf("containerd runtime: Config.LogDir must be an absolute path, got %q", cfg.LogDir)
	}
	if err := os.MkdirAll(cfg.LogDir, 0o750); err != nil {
		return nil, fmt.Errorf("containerd runtime: log dir: %w", err)
	}
	hint := "is containerd running? start it with `containerd >/tmp/containerd.log 2>&1 &` (or `systemctl start containerd`)"
	// Check the socket first: the client's dial would only time out.
	conn, err := net.DialTimeout("unix", cfg.Socket, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("containerd runtime: connect to %s: %w (%s)", cfg.Socket, err, hint)
	}
	conn.Close()
	client, err := containerd.New(cfg.Socket, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd runtime: connect to %s: %w (%s)", cfg.Socket, err, hint)
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Version(vctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("containerd runtime: containerd at %s does not answer: %w (%s)", cfg.Socket, err, hint)
	}

	wctx, wcancel := context.WithCancel(context.Background())
	d := &Containerd{
		cfg:      cfg,
		client:   client,
		log:      cfg.Logger.With("component", "runtime", "namespace", cfg.Namespace),
		running:  map[string]uint32{},
		expected: map[string]uint32{},
		reported: map[string]uint32{},
		exits:    make(chan Exit, 64),
		ctx:      wctx,
		cancel:   wcancel,
	}
	// Re-arm: every task running now is watched from here on.
	sts, err := d.List(ctx)
	if err != nil {
		wcancel()
		client.Close()
		return nil, err
	}
	for _, st := range sts {
		if st.State == StateRunning {
			d.running[st.ID] = uint32(st.Pid)
		}
	}
	d.wg.Add(1)
	go d.watch()
	return d, nil
}

// call returns a context in the driver's namespace with the call deadline.
func (d *Containerd) call(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout == 0 {
		timeout = d.cfg.CallTimeout
	}
	return context.WithTimeout(namespaces.WithNamespace(ctx, d.cfg.Namespace), timeout)
}

// LogPath is where the task of container id writes stdout and stderr.
func (d *Containerd) LogPath(id string) string {
	return filepath.Join(d.cfg.LogDir, id+".log")
}

// EnsureImage implements Runtime. An image present under ref is used as is
// unless the image directory lists another digest for ref (a rebuild), in
// which case it is re-imported.
func (d *Containerd) EnsureImage(ctx context.Context, ref string) error {
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	ctx, cancel := d.call(ctx, importTimeout)
	defer cancel()

	var (
		entry    packaging.IndexEntry
		inDir    bool
		indexErr error
	)
	if d.cfg.ImageDir != "" {
		ix, err := packaging.ReadIndex(d.cfg.ImageDir)
		if err != nil {
			indexErr = err
		} else {
			entry, inDir = ix.Lookup(ref)
		}
	}
	img, err := d.client.GetImage(ctx, ref)
	switch {
	case err == nil && (!inDir || img.Target().Digest.String() == entry.ManifestDigest):
		return d.unpack(ctx, img)
	case err != nil && !errdefs.IsNotFound(err):
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if !inDir {
		where := "no image directory configured"
		if d.cfg.ImageDir != "" {
			where = fmt.Sprintf("not listed in %s", filepath.Join(d.cfg.ImageDir, packaging.IndexFile))
			if indexErr != nil {
				where = indexErr.Error()
			}
		}
		return fmt.Errorf("image %s: %w in containerd namespace %s and %s (build images with `go run ./packaging/cmd/build-images -out DIR`)",
			ref, ErrImageNotFound, d.cfg.Namespace, where)
	}
	start := time.Now()
	f, err := os.Open(filepath.Join(d.cfg.ImageDir, entry.File))
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	defer f.Close()
	imported, err := d.client.Import(ctx, f)
	if err != nil {
		return fmt.Errorf("image %s: import %s: %w", ref, f.Name(), err)
	}
	for _, i := range imported {
		if i.Name == ref {
			if err := d.unpack(ctx, containerd.NewImage(d.client, i)); err != nil {
				return err
			}
			d.log.Info("image imported", "ref", ref, "digest", i.Target.Digest.String(), "took", time.Since(start))
			return nil
		}
	}
	return fmt.Errorf("image %s: %w: %s does not name it", ref, ErrImageNotFound, f.Name())
}

func (d *Containerd) unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, d.cfg.Snapshotter)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name(), err)
	}
	if ok {
		return nil
	}
	if err := img.Unpack(ctx, d.cfg.Snapshotter); err != nil {
		return fmt.Errorf("image %s: unpack: %w", img.Name(), err)
	}
	return nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$`)

func validate(s Spec) error {
	switch {
	case !idPattern.MatchString(s.ID):
		return fmt.Errorf("%w: id %q is not a valid container id", ErrInvalidSpec, s.ID)
	case s.Image == "":
		return fmt.Errorf("%w: %s: no image", ErrInvalidSpec, s.ID)
	case len(s.Args) == 0:
		return fmt.Errorf("%w: %s: no args", ErrInvalidSpec, s.ID)
	case s.DataDir != "" && !filepath.IsAbs(s.DataDir):
		return fmt.Errorf("%w: %s: data dir %q is not absolute", ErrInvalidSpec, s.ID, s.DataDir)
	case s.MemoryLimitBytes < 0:
		return fmt.Errorf("%w: %s: negative memory limit", ErrInvalidSpec, s.ID)
	}
	for _, m := range s.ExtraMounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("%w: %s: mount %s:%s is not absolute", ErrInvalidSpec, s.ID, m.Source, m.Destination)
		}
	}
	return nil
}

// Start implements Runtime.
func (d *Containerd) Start(ctx context.Context, s Spec) error {
	if err := validate(s); err != nil {
		return err
	}
	begin := time.Now()
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, s.ID)
	switch {
	case err == nil:
		st, err := d.status(cctx, c)
		if err != nil {
			return fmt.Errorf("start %s: %w", s.ID, err)
		}
		if st.State == StateRunning && st.SpecHash == s.SpecHash {
			d.track(s.ID, uint32(st.Pid))
			return nil
		}
		if st.State == StateRunning {
			d.log.Info("replacing member: spec changed", "id", s.ID, "old_hash", st.SpecHash, "new_hash", s.SpecHash)
			if err := d.Stop(ctx, s.ID, DefaultReplaceGrace); err != nil {
				return fmt.Errorf("start %s: replace: %w", s.ID, err)
			}
		}
		if err := d.Destroy(ctx, s.ID); err != nil {
			return fmt.Errorf("start %s: remove stale container: %w", s.ID, err)
		}
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("start %s: %w", s.ID, err)
	}

	if err := d.EnsureImage(ctx, s.Image); err != nil {
		return fmt.Errorf("start %s: %w", s.ID, err)
	}
	img, err := d.client.GetImage(cctx, s.Image)
	if err != nil {
		return fmt.Errorf("start %s: image %s: %w", s.ID, s.Image, err)
	}
	if s.DataDir != "" {
		if err := os.MkdirAll(s.DataDir, 0o750); err != nil {
			return fmt.Errorf("start %s: data dir: %w", s.ID, err)
		}
	}
	// One log per incarnation: the previous one is kept as .log.1.
	logPath := d.LogPath(s.ID)
	if err := os.Rename(logPath, logPath+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start %s: rotate log: %w", s.ID, err)
	}

	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelAddon] = s.Addon
	labels[LabelMember] = s.Member
	labels[LabelRole] = s.Role
	labels[LabelSpecHash] = s.SpecHash
	labels[LabelStartedAt] = time.Now().UTC().Format(time.RFC3339Nano)

	c, err = d.client.NewContainer(cctx, s.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(d.cfg.Snapshotter),
		containerd.WithNewSnapshot(s.ID, img),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(specOpts(s, img)...),
	)
	if err != nil {
		return fmt.Errorf("start %s: create container: %w", s.ID, err)
	}
	task, err := c.NewTask(cctx, cio.LogFile(logPath))
	if err != nil {
		d.deleteContainer(s.ID, c)
		return fmt.Errorf("start %s: create task: %w", s.ID, err)
	}
	if err := task.Start(cctx); err != nil {
		if _, derr := task.Delete(cctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			d.log.Warn("delete failed task", "id", s.ID, "err", derr)
		}
		d.deleteContainer(s.ID, c)
		return fmt.Errorf("start %s: start task: %w", s.ID, err)
	}
	d.track(s.ID, task.Pid())
	d.log.Info("member started", "id", s.ID, "pid", task.Pid(), "image", s.Image, "took", time.Since(begin))
	return nil
}

func (d *Containerd) deleteContainer(id string, c containerd.Container) {
	ctx, cancel := d.call(context.Background(), 0)
	defer cancel()
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		d.log.Warn("delete container after failed start", "id", id, "err", err)
	}
}

func specOpts(s Spec, img containerd.Image) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithProcessArgs(s.Args...),
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
	}
	if len(s.Env) > 0 {
		opts = append(opts, oci.WithEnv(s.Env))
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		opts = append(opts, oci.WithHostResolvconf)
	}
	var mounts []specs.Mount
	if s.DataDir != "" {
		mounts = append(mounts, specs.Mount{Type: "bind", Source: s.DataDir, Destination: s.DataDir, Options: []string{"rbind", "rw"}})
	}
	for _, m := range s.ExtraMounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: []string{"rbind", mode}})
	}
	if len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	nofile := s.NoFileLimit
	if nofile == 0 {
		nofile = defaultNoFile()
	}
	opts = append(opts, withMemory(s.MemoryLimitBytes), withNoFile(nofile))
	return opts
}

// withMemory sets the memory limit and an equal memory+swap limit.
func withMemory(limit int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		setMemory(s, limit)
		return nil
	}
}

func setMemory(s *oci.Spec, limit int64) {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	if limit == 0 {
		if s.Linux.Resources.Memory != nil {
			s.Linux.Resources.Memory.Limit = nil
			s.Linux.Resources.Memory.Swap = nil
		}
		return
	}
	if s.Linux.Resources.Memory == nil {
		s.Linux.Resources.Memory = &specs.LinuxMemory{}
	}
	l, sw := limit, limit
	s.Linux.Resources.Memory.Limit = &l
	s.Linux.Resources.Memory.Swap = &sw
}

// defaultNoFile is DefaultNoFileLimit, lowered to this process's hard
// limit: without CAP_SYS_RESOURCE (containerd inside a container) runc
// cannot raise the limit above what containerd itself has.
func defaultNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Max < DefaultNoFileLimit {
		return rl.Max
	}
	return DefaultNoFileLimit
}

func withNoFile(n uint64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		rl := specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: n, Soft: n}
		for i := range s.Process.Rlimits {
			if s.Process.Rlimits[i].Type == rl.Type {
				s.Process.Rlimits[i] = rl
				return nil
			}
		}
		s.Process.Rlimits = append(s.Process.Rlimits, rl)
		return nil
	}
}

// Stop implements Runtime, as nerdctl does: wait first, SIGTERM, grace,
// SIGKILL; a missing container or task is stopped.
func (d *Containerd) Stop(ctx context.Context, id string, grace time.Duration) error {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	task, err := c.Task(cctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	st, err := task.Status(cctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	if st.Status == containerd.Stopped {
		d.untrack(id)
		return nil
	}

	wctx, wcancel := d.call(ctx, grace+d.cfg.CallTimeout)
	defer wcancel()
	exitCh, err := task.Wait(wctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("stop %s: wait: %w", id, err)
	}
	d.expect(id, task.Pid())
	if err := task.Kill(cctx, syscall.SIGTERM); err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("stop %s: SIGTERM: %w", id, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var es containerd.ExitStatus
	select {
	case es = <-exitCh:
	case <-timer.C:
		d.log.Warn("member ignored SIGTERM, killing", "id", id, "grace", grace)
		kctx, kcancel := d.call(ctx, 0)
		err := task.Kill(kctx, syscall.SIGKILL)
		kcancel()
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("stop %s: SIGKILL: %w", id, err)
		}
		select {
		case es = <-exitCh:
		case <-wctx.Done():
			return fmt.Errorf("stop %s: no exit after SIGKILL: %w", id, wctx.Err())
		}
	case <-wctx.Done():
		return fmt.Errorf("stop %s: %w", id, wctx.Err())
	}
	// Wait also returns (status 255) when containerd itself stops: only a
	// stopped task counts.
	if err := es.Error(); err != nil {
		return fmt.Errorf("stop %s: wait: %w", id, err)
	}
	sctx, scancel := d.call(ctx, 0)
	defer scancel()
	if st, err := task.Status(sctx); err == nil && st.Status != containerd.Stopped {
		return fmt.Errorf("stop %s: task still %s after exit", id, st.Status)
	}
	d.untrack(id)
	return nil
}

// Destroy implements Runtime.
func (d *Containerd) Destroy(ctx context.Context, id string) error {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	defer d.removeCgroups(id)
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		d.untrack(id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	task, err := c.Task(cctx, nil)
	switch {
	case err == nil:
		d.expect(id, task.Pid())
		if _, err := task.Delete(cctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("destroy %s: delete task: %w", id, err)
		}
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	d.untrack(id)
	if err := c.Delete(cctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("destroy %s: delete container: %w", id, err)
	}
	return nil
}

// removeCgroups removes the container's cgroups and the namespace's
// parent cgroup if they are empty (runc leaves the parent behind). rmdir
// fails on a non-empty cgroup, so this never disturbs a live one.
func (d *Containerd) removeCgroups(id string) {
	roots, _ := filepath.Glob(filepath.Join(d.cfg.CgroupRoot, "*"))
	roots = append(roots, d.cfg.CgroupRoot) // cgroup v2
	for _, r := range roots {
		if id != "" {
			_ = syscall.Rmdir(filepath.Join(r, d.cfg.Namespace, id))
		}
		_ = syscall.Rmdir(filepath.Join(r, d.cfg.Namespace))
	}
}

// Inspect implements Runtime.
func (d *Containerd) Inspect(ctx context.Context, id string) (Status, error) {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		return Status{ID: id, State: StateMissing, ExitCode: -1}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	st, err := d.status(cctx, c)
	if errdefs.IsNotFound(err) {
		return Status{ID: id, State: StateMissing, ExitCode: -1}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("inspect %s: %w", id, err)
	}
	return st, nil
}

// List implements Runtime. It costs two calls to containerd whatever the
// number of containers (the containers with the metadata they were listed
// with, and every task of the namespace at once), not three per container:
// the agent lists on every heartbeat.
func (d *Containerd) List(ctx context.Context) ([]Status, error) {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	cs, err := d.client.Containers(cctx)
	if err != nil {
		return nil, fmt.Errorf("list containers in namespace %s: %w", d.cfg.Namespace, err)
	}
	tl, err := d.client.TaskService().List(cctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks in namespace %s: %w", d.cfg.Namespace, err)
	}
	procs := make(map[string]*tasktypes.Process, len(tl.Tasks))
	for _, p := range tl.Tasks {
		procs[taskContainer(p)] = p
	}
	out := make([]Status, 0, len(cs))
	for _, c := range cs {
		info, err := c.Info(cctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			return nil, fmt.Errorf("list: %s: %w", c.ID(), err)
		}
		st := d.statusOf(c.ID(), info)
		if p, ok := procs[c.ID()]; ok {
			switch p.Status {
			case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
				st.State = StateRunning
				st.Pid = int(p.Pid)
			case tasktypes.Status_STOPPED:
				st.ExitCode = int(p.ExitStatus)
				if p.ExitedAt != nil {
					st.ExitedAt = p.ExitedAt.AsTime()
				}
			}
		}
		out = append(out, st)
	}
	d.forgetLimits(cs)
	return out, nil
}

// statusOf is a container's status from its metadata alone (no task:
// stopped).
func (d *Containerd) statusOf(id string, info containers.Container) Status {
	st := Status{
		ID:       id,
		Addon:    info.Labels[LabelAddon],
		Member:   info.Labels[LabelMember],
		Role:     info.Labels[LabelRole],
		Image:    info.Image,
		Labels:   info.Labels,
		SpecHash: info.Labels[LabelSpecHash],
		State:    StateStopped,
		ExitCode: -1,
	}
	if t, err := time.Parse(time.RFC3339Nano, info.Labels[LabelStartedAt]); err == nil {
		st.StartedAt = t
	}
	st.MemoryLimitBytes = d.memoryLimit(id, info)
	return st
}

// memoryLimit is the memory limit in a container's OCI spec. The spec is
// decoded once per version of the container's record (its UpdatedAt), not
// on every heartbeat.
func (d *Containerd) memoryLimit(id string, info containers.Container) int64 {
	d.mu.Lock()
	if l, ok := d.limits[id]; ok && l.at.Equal(info.UpdatedAt) {
		d.mu.Unlock()
		return l.bytes
	}
	d.mu.Unlock()
	var limit int64
	if info.Spec != nil {
		var spec struct {
			Linux *struct {
				Resources *struct {
					Memory *struct {
						Limit *int64 `json:"limit"`
					} `json:"memory"`
				} `json:"resources"`
			} `json:"linux"`
		}
		if err := json.Unmarshal(info.Spec.GetValue(), &spec); err == nil && spec.Linux != nil &&
			spec.Linux.Resources != nil && spec.Linux.Resources.Memory != nil && spec.Linux.Resources.Memory.Limit != nil {
			limit = max(*spec.Linux.Resources.Memory.Limit, 0)
		}
	}
	d.mu.Lock()
	if d.limits == nil {
		d.limits = map[string]specLimit{}
	}
	d.limits[id] = specLimit{at: info.UpdatedAt, bytes: limit}
	d.mu.Unlock()
	return limit
}

// forgetLimits drops the cached limits of containers no longer listed.
func (d *Containerd) forgetLimits(listed []containerd.Container) {
	keep := make(map[string]bool, len(listed))
	for _, c := range listed {
		keep[c.ID()] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range d.limits {
		if !keep[id] {
			delete(d.limits, id)
		}
	}
}

func (d *Containerd) status(ctx context.Context, c containerd.Container) (Status, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return Status{}, err
	}
	st := d.statusOf(c.ID(), info)
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("task: %w", err)
	}
	ts, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("task status: %w", err)
	}
	switch ts.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		st.State = StateRunning
		st.Pid = int(task.Pid())
	case containerd.Stopped:
		st.ExitCode = int(ts.ExitStatus)
		st.ExitedAt = ts.ExitTime
	}
	return st, nil
}

// UpdateResources implements Runtime.
func (d *Containerd) UpdateResources(ctx context.Context, id string, memoryLimitBytes int64) error {
	if memoryLimitBytes < 0 {
		return fmt.Errorf("update %s: %w: negative memory limit", id, ErrInvalidSpec)
	}
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("update %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("update %s: %w", id, err)
	}
	task, err := c.Task(cctx, nil)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("update %s: %w", id, err)
	}
	if err == nil {
		if ts, err := task.Status(cctx); err == nil && ts.Status == containerd.Running {
			l := memoryLimitBytes
			if l == 0 {
				l = -1 // unlimited
			}
			sw := l
			res := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &l, Swap: &sw}}
			if err := task.Update(cctx, containerd.WithResources(res)); err != nil {
				return fmt.Errorf("update %s: memory limit %d on the running task (the kernel refuses a limit below current usage): %w", id, memoryLimitBytes, err)
			}
		}
	}
	err = c.Update(cctx, func(_ context.Context, _ *containerd.Client, cont *containers.Container) error {
		if cont.Spec == nil {
			return errors.New("container has no spec")
		}
		var spec oci.Spec
		if err := json.Unmarshal(cont.Spec.GetValue(), &spec); err != nil {
			return err
		}
		setMemory(&spec, memoryLimitBytes)
		a, err := typeurl.MarshalAny(&spec)
		if err != nil {
			return err
		}
		cont.Spec = a
		return nil
	})
	if err != nil {
		return fmt.Errorf("update %s: stored spec: %w", id, err)
	}
	return nil
}

// unlimited is what cgroup v1 reports as the limit when there is none.
const unlimited = uint64(1) << 62

func limit(v uint64) uint64 {
	if v >= unlimited {
		return 0
	}
	return v
}

// Stats implements Runtime.
func (d *Containerd) Stats(ctx context.Context, id string) (Stats, error) {
	cctx, cancel := d.call(ctx, 0)
	defer cancel()
	c, err := d.client.LoadContainer(cctx, id)
	if errdefs.IsNotFound(err) {
		return Stats{}, fmt.Errorf("stats %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	task, err := c.Task(cctx, nil)
	if errdefs.IsNotFound(err) {
		return Stats{}, fmt.Errorf("stats %s: no task: %w", id, ErrNotFound)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	m, err := task.Metrics(cctx)
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: metrics: %w", id, err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: decode metrics: %w", id, err)
	}
	at := time.Now()
	if m.Timestamp != nil {
		at = m.Timestamp.AsTime()
	}
	st, err := statsFrom(v, at)
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	return st, nil
}

// statsFrom converts containerd's cgroup v1 or v2 metrics.
func statsFrom(v any, at time.Time) (Stats, error) {
	s := Stats{At: at}
	switch v := v.(type) {
	case *v1stats.Metrics:
		if v.CPU != nil && v.CPU.Usage != nil {
			s.CPUUsageNanos = v.CPU.Usage.Total
		}
		if mem := v.Memory; mem != nil {
			s.RSSBytes = mem.TotalRSS
			if mem.Usage != nil {
				s.MemoryBytes = mem.Usage.Usage
				s.MemoryMaxBytes = mem.Usage.Max
				s.MemoryLimitBytes = limit(mem.Usage.Limit)
			}
			if mem.Swap != nil { // memsw: memory + swap
				if mem.Swap.Usage > s.MemoryBytes {
					s.SwapBytes = mem.Swap.Usage - s.MemoryBytes
				}
				s.SwapLimitBytes = limit(mem.Swap.Limit)
			}
		}
	case *v2stats.Metrics:
		if v.CPU != nil {
			s.CPUUsageNanos = v.CPU.UsageUsec * 1000
		}
		if mem := v.Memory; mem != nil {
			s.MemoryBytes = mem.Usage
			s.RSSBytes = mem.Anon
			s.MemoryLimitBytes = limit(mem.UsageLimit)
			s.SwapBytes = mem.SwapUsage
			// memory.swap.max is swap alone; report memory+swap as v1 does.
			if s.MemoryLimitBytes != 0 && mem.SwapLimit < unlimited {
				s.SwapLimitBytes = s.MemoryLimitBytes + mem.SwapLimit
			}
		}
	default:
		return Stats{}, fmt.Errorf("unknown metrics type %T", v)
	}
	return s, nil
}

// LastLogLines implements Runtime: the tail of <LogDir>/<id>.log.
func (d *Containerd) LastLogLines(id string, n int) ([]string, error) {
	return lastLines(d.LogPath(id), n)
}

// Exits implements Runtime.
func (d *Containerd) Exits() <-chan Exit { return d.exits }

// Close implements Runtime: it stops the exit watcher and closes the
// connection; tasks keep running.
func (d *Containerd) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.cancel()
		d.wg.Wait()
		close(d.exits)
		err = d.client.Close()
	})
	return err
}

// Purge destroys every container of the namespace, deletes its images and
// then the namespace itself: for tests and for decommissioning a host.
func (d *Containerd) Purge(ctx context.Context) error {
	sts, err := d.List(ctx)
	if err != nil {
		return err
	}
	for _, st := range sts {
		if err := d.Destroy(ctx, st.ID); err != nil {
			return err
		}
	}
	cctx, cancel := d.call(ctx, importTimeout)
	defer cancel()
	imgs, err := d.client.ImageService().List(cctx)
	if err != nil {
		return fmt.Errorf("purge %s: list images: %w", d.cfg.Namespace, err)
	}
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			opts = append(opts, images.SynchronousDelete()) // one GC at the end
		}
		if err := d.client.ImageService().Delete(cctx, img.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("purge %s: delete image %s: %w", d.cfg.Namespace, img.Name, err)
		}
	}
	if err := d.client.NamespaceService().Delete(cctx, d.cfg.Namespace); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("purge %s: delete namespace: %w", d.cfg.Namespace, err)
	}
	d.removeCgroups("")
	return nil
}

func (d *Containerd) track(id string, pid uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running[id] = pid
}

func (d *Containerd) untrack(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.running, id)
}

// expect marks the exit of id's process pid as caused by the driver.
func (d *Containerd) expect(id string, pid uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expected[id] = pid
}

// exited records the exit of id's process pid and reports it on Exits
// unless the driver caused it or it was reported already.
func (d *Containerd) exited(id string, pid uint32, code int, at time.Time) {
	d.mu.Lock()
	if d.running[id] == pid {
		delete(d.running, id)
	}
	if d.expected[id] == pid {
		delete(d.expected, id)
		d.reported[id] = pid
		d.mu.Unlock()
		return
	}
	if d.reported[id] == pid {
		d.mu.Unlock()
		return
	}
	d.reported[id] = pid
	d.mu.Unlock()
	d.log.Warn("member exited", "id", id, "pid", pid, "exit_code", code)
	select {
	case d.exits <- Exit{ID: id, Pid: int(pid), ExitCode: code, At: at}:
	case <-d.ctx.Done():
	}
}

// watch reports task exits from containerd's event stream (/tasks/exit).
// Unlike task.Wait, the stream reports nothing when containerd itself
// stops; the watcher then re-subscribes and reconciles the tasks it
// believed running, so no exit is missed or invented.
func (d *Containerd) watch() {
	defer d.wg.Done()
	backoff := 100 * time.Millisecond
	filter := `topic=="/tasks/exit",namespace==` + strconv.Quote(d.cfg.Namespace)
	for d.ctx.Err() == nil {
		sctx, scancel := context.WithCancel(namespaces.WithNamespace(d.ctx, d.cfg.Namespace))
		ch, errs := d.client.Subscribe(sctx, filter)
		d.reconcile()
		ticker := time.NewTicker(reconcileEvery)
		subscribed := time.Now()
		err := d.consume(ch, errs, ticker.C)
		ticker.Stop()
		scancel()
		if d.ctx.Err() != nil {
			return
		}
		if time.Since(subscribed) > reconcileEvery {
			backoff = 100 * time.Millisecond // it worked for a while
		}
		d.log.Warn("containerd event stream broken, re-subscribing", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-d.ctx.Done():
			t.Stop()
			return
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (d *Containerd) consume(ch <-chan *events.Envelope, errs <-chan error, tick <-chan time.Time) error {
	for {
		select {
		case <-d.ctx.Done():
			return nil
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return err
		case <-tick:
			d.reconcile()
		case env := <-ch:
			if env == nil {
				continue
			}
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				d.log.Warn("undecodable event", "topic", env.Topic, "err", err)
				continue
			}
			e, ok := v.(*apievents.TaskExit)
			if !ok || e.ID != e.ContainerID { // exec'd processes are not members
				continue
			}
			at := time.Now()
			if e.ExitedAt != nil {
				at = e.ExitedAt.AsTime()
			}
			d.exited(e.ContainerID, e.Pid, int(e.ExitStatus), at)
		}
	}
}

// reconcile checks the tasks believed running and reports those that are
// not (any more). One call lists every task of the namespace, whatever
// the number of members (it runs every reconcileEvery).
func (d *Containerd) reconcile() {
	d.mu.Lock()
	check := make(map[string]uint32, len(d.running))
	for id, pid := range d.running {
		check[id] = pid
	}
	d.mu.Unlock()
	if len(check) == 0 {
		return
	}
	cctx, cancel := d.call(d.ctx, 0)
	defer cancel()
	tl, err := d.client.TaskService().List(cctx, &tasks.ListTasksRequest{})
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Warn("reconcile exits: list tasks", "err", err)
		}
		return // containerd unreachable: try again later
	}
	procs := make(map[string]*tasktypes.Process, len(tl.Tasks))
	for _, p := range tl.Tasks {
		procs[taskContainer(p)] = p
	}
	for id, pid := range check {
		if code, at, dead := exitOf(procs[id], pid, time.Now()); dead {
			d.exited(id, pid, code, at)
		}
	}
}

// exitOf is the reconcile rule (pure): whether the task p (nil: none) says
// process pid, believed running, has died, with its exit status and time
// (-1 and now when unknown: no task, or another process runs now).
func exitOf(p *tasktypes.Process, pid uint32, now time.Time) (code int, at time.Time, dead bool) {
	if p == nil {
		return -1, now, true
	}
	switch p.Status {
	case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		if p.Pid == pid {
			return 0, time.Time{}, false
		}
		return -1, now, true // restarted by someone else: the old pid died
	case tasktypes.Status_STOPPED:
		at = now
		if p.ExitedAt != nil {
			at = p.ExitedAt.AsTime()
		}
		return int(p.ExitStatus), at, true
	}
	// Created (not started yet) or unknown: its process is not the one
	// believed running.
	return -1, now, true
}

// taskContainer is a listed task's container id (containerd 1.6 leaves
// ContainerID empty in the list: the task's id is its container's).
func taskContainer(p *tasktypes.Process) string {
	if p.ContainerID != "" {
		return p.ContainerID
	}
	return p.ID
}

package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Scratch runs throw-away redis servers serving a dump.
type Scratch interface {
	// Start serves the dump.rdb (and the AOF, when dir has
	// appendonlydir/ with a manifest) of dir with a redis-server of the
	// addon's engine version, on a loopback address, without a password,
	// and returns once it has loaded them. stop removes the server (not
	// dir). An error wrapping ErrScratchExited means the server died
	// while loading: the dump, or the memory limit, is at fault.
	Start(ctx context.Context, dir string) (addr string, stop func(context.Context) error, err error)
}

// ErrScratchExited is wrapped by Start when the scratch server exited
// before it had loaded its data (a damaged dump, one of a newer engine,
// or over the memory limit), with its last log lines.
var ErrScratchExited = errors.New("the scratch redis exited")

// Scratch container facts.
const (
	// RoleScratch is the runtime role label of a scratch container;
	// ScratchIDPrefix starts its id.
	RoleScratch     = "backup-scratch"
	ScratchIDPrefix = "scratch-"
	// ScratchConfName is the scratch's config file, written in its dir.
	ScratchConfName = "scratch.conf"
	// DefaultScratchLoadTimeout bounds a scratch's start and load when
	// RuntimeScratch.LoadTimeout is 0.
	DefaultScratchLoadTimeout = 30 * time.Minute
	// scratchPortTries bounds the ports tried when one is taken between
	// the check and the bind.
	scratchPortTries = 5
	scratchLogLines  = 20
	scratchPoll      = 50 * time.Millisecond
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ First, Last int }

// RuntimeScratch is a Scratch running redis-server as a container of an
// agent runtime: host networking, the dump's dir bind-mounted at the same
// path, a memory limit. Its containers carry role RoleScratch and an id
// starting with ScratchIDPrefix, so an agent can tell them from members
// (and remove leftovers after a crash: Cleanup).
//
// No password: the server binds Host only, which must be a loopback
// address (the agent passes 127.0.0.1; tests 127.0.0.x), so only
// processes of this host reach it, for the minutes of a drill or restore;
// they can read the member's dump.rdb as well. A random password would
// have to travel back through Start to every caller for no gain.
//
// It starts as a replica of 127.0.0.1:0 (nothing ever listens on port 0:
// the link stays down, no sync ever replaces its data): a replica keeps
// keys whose TTL passed when it loads them and never expires them itself,
// so its INFO keyspace counts what the dump holds, as the member's own
// count did at dump time, however long ago; it reads them as missing, as
// a master would, and replica-serve-stale-data lets it answer.
type RuntimeScratch struct {
	Runtime runtime.Runtime
	// Image is the addon engine version's redis image (api.ImageRedis7
	// …); Binary the server inside it (/usr/bin/redis-server,
	// /usr/bin/valkey-server).
	Image, Binary string
	// Host is the loopback address to bind; Ports the range to take a
	// free port from.
	Host  string
	Ports PortRange
	// MemoryLimitBytes is the container's memory limit (0: none); the
	// agent passes the addon's (render.ContainerMemoryLimitBytes).
	MemoryLimitBytes int64
	// LoadTimeout bounds start and load; 0 means
	// DefaultScratchLoadTimeout.
	LoadTimeout time.Duration
}

// ScratchConf is the redis.conf of a scratch server (pure): bind host and
// port, data in dir (dump.rdb, or the AOF when aof), no password, no
// saves, a replica of nothing (see RuntimeScratch), five databases.
func ScratchConf(host string, port int, dir string, aof bool) string {
	appendonly := "no"
	if aof {
		appendonly = "yes"
	}
	lines := []string{
		"# Scratch redis of a backup drill or restore (agent/backup): throw-away, loopback only.",
		"bind " + host,
		"port " + strconv.Itoa(port),
		"protected-mode no",
		"daemonize no",
		"supervised no",
		`logfile ""`,
		"databases " + strconv.Itoa(render.RedisDatabases),
		"dir " + dir,
		"dbfilename " + render.RDBFileName,
		`save ""`,
		"appendonly " + appendonly,
		`appendfilename "` + render.AOFFileName + `"`,
		`appenddirname "` + render.AOFDirName + `"`,
		"appendfsync no",
		"aof-load-truncated yes",
		"# A replica of nothing: it neither expires nor drops the keys it loads.",
		"replicaof 127.0.0.1 0",
		"replica-serve-stale-data yes",
		"replica-read-only yes",
		"maxmemory 0",
	}
	return strings.Join(lines, "\n") + "\n"
}

// HasAOF reports whether dir holds an AOF to load (its manifest).
func HasAOF(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, render.AOFDirName, AOFManifestName))
	return err == nil && fi.Mode().IsRegular()
}

func (s *RuntimeScratch) check() error {
	ip := net.ParseIP(s.Host)
	switch {
	case s.Runtime == nil || s.Image == "" || s.Binary == "":
		return errors.New("scratch: runtime, image and binary are required")
	case ip == nil || !ip.IsLoopback():
		return fmt.Errorf("scratch: host %q is not a loopback address", s.Host)
	case s.Ports.First < 1 || s.Ports.Last > 65535 || s.Ports.First > s.Ports.Last:
		return fmt.Errorf("scratch: port range %d-%d", s.Ports.First, s.Ports.Last)
	}
	return nil
}

// freePort returns a port of the range nobody listens on now, trying them
// from a random one.
func (s *RuntimeScratch) freePort() (int, error) {
	n := s.Ports.Last - s.Ports.First + 1
	off, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		p := s.Ports.First + (int(off.Int64())+i)%n
		l, err := net.Listen("tcp", net.JoinHostPort(s.Host, strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("scratch: no free port in %d-%d on %s", s.Ports.First, s.Ports.Last, s.Host)
}

// Start implements Scratch.
func (s *RuntimeScratch) Start(ctx context.Context, dir string) (string, func(context.Context) error, error) {
	if err := s.check(); err != nil {
		return "", nil, err
	}
	if !filepath.IsAbs(dir) {
		return "", nil, fmt.Errorf("scratch: dir %q is not absolute", dir)
	}
	timeout := s.LoadTimeout
	if timeout <= 0 {
		timeout = DefaultScratchLoadTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.Runtime.EnsureImage(ctx, s.Image); err != nil {
		return "", nil, fmt.Errorf("scratch: %w", err)
	}
	aof := HasAOF(dir)
	for try := 1; ; try++ {
		port, err := s.freePort()
		if err != nil {
			return "", nil, err
		}
		addr, stop, err := s.start(ctx, dir, port, aof)
		if err == nil || try == scratchPortTries || !errors.Is(err, errPortTaken) {
			return addr, stop, err
		}
	}
}

var errPortTaken = errors.New("port taken")

func (s *RuntimeScratch) start(ctx context.Context, dir string, port int, aof bool) (string, func(context.Context) error, error) {
	conf := filepath.Join(dir, ScratchConfName)
	if err := os.WriteFile(conf, []byte(ScratchConf(s.Host, port, dir, aof)), 0o600); err != nil {
		return "", nil, fmt.Errorf("scratch: %w", err)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	id := ScratchIDPrefix + hex.EncodeToString(rnd[:])
	spec := runtime.Spec{
		ID: id, Addon: "", Member: id, Role: RoleScratch,
		Image: s.Image, Args: []string{s.Binary, conf}, DataDir: dir,
		MemoryLimitBytes: s.MemoryLimitBytes, SpecHash: id,
	}
	stop := func(ctx context.Context) error {
		if err := s.Runtime.Destroy(ctx, id); err != nil {
			return fmt.Errorf("scratch %s: %w", id, err)
		}
		return nil
	}
	if err := s.Runtime.Start(ctx, spec); err != nil {
		_ = stop(context.WithoutCancel(ctx))
		return "", nil, fmt.Errorf("scratch: %w", err)
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(port))
	if err := s.waitLoaded(ctx, id, addr); err != nil {
		_ = stop(context.WithoutCancel(ctx))
		return "", nil, err
	}
	return addr, stop, nil
}

// waitLoaded waits until the server at addr has loaded its data, or its
// container stopped (an ErrScratchExited error with its last log lines).
func (s *RuntimeScratch) waitLoaded(ctx context.Context, id, addr string) error {
	t := time.NewTicker(scratchPoll)
	defer t.Stop()
	for {
		st, err := s.Runtime.Inspect(ctx, id)
		if err != nil {
			return fmt.Errorf("scratch: %w", err)
		}
		if st.State != runtime.StateRunning {
			lines, _ := s.Runtime.LastLogLines(id, scratchLogLines)
			log := strings.Join(lines, "\n")
			if strings.Contains(log, "Address already in use") {
				return fmt.Errorf("scratch on %s: %w", addr, errPortTaken)
			}
			return fmt.Errorf("%w (exit status %d, memory limit %d MiB): %s\nits last lines:\n%s",
				ErrScratchExited, st.ExitCode, s.MemoryLimitBytes>>20, ExitReason(lines, st.ExitCode), log)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = redisctl.WaitLoaded(pctx, redisctl.Endpoint{Addr: addr})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scratch on %s: not loaded: %w (%v)", addr, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// ExitReason picks, from a redis server's last log lines, the one that
// says why it stopped: its first warning ("#") that is not a startup
// warning (pure). A process killed by SIGKILL without a word (status
// 137) is most likely over its memory limit.
func ExitReason(lines []string, status int) string {
	for _, l := range lines {
		_, msg, ok := strings.Cut(l, " # ")
		if ok && !strings.HasPrefix(msg, "WARNING") && !strings.Contains(msg, "Redis is starting") &&
			!strings.Contains(msg, "Valkey is starting") && !strings.HasPrefix(msg, "Redis version=") &&
			!strings.HasPrefix(msg, "Valkey version=") && msg != "Configuration loaded" && msg != "Server initialized" {
			return strings.TrimSpace(msg)
		}
	}
	if status == 137 {
		return "killed (SIGKILL): most likely over its memory limit"
	}
	return "no reason in its log"
}

// Cleanup removes every scratch container of the runtime (leftovers of a
// drill or restore the agent did not finish: a crash). The agent calls it
// when it starts, before any drill.
func (s *RuntimeScratch) Cleanup(ctx context.Context) error {
	sts, err := s.Runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("scratch cleanup: %w", err)
	}
	var errs []error
	for _, st := range sts {
		if st.Role == RoleScratch && strings.HasPrefix(st.ID, ScratchIDPrefix) {
			if err := s.Runtime.Destroy(ctx, st.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("scratch cleanup: %w", err)
	}
	return nil
}

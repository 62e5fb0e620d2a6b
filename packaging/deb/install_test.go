package main

// The packages as an operator meets them: built by Build, installed with
// dpkg into throw-away Debian roots (dpkg --root runs the maintainer
// scripts chrooted into the root, so adduser and deb-systemd-helper act on
// the root's /etc), and the daemons run from the installed files with the
// installed units' exact command lines.
//
// Why dpkg --root and not a container or dpkg-deb -x: dpkg -i is what the
// issue asks for and runs the real maintainer scripts against a real dpkg
// database (dependencies, conffiles, upgrades, removal); a container would
// need a runtime we do not have for this (containerd runs our members, not
// Debian userlands with their own init); dpkg-deb -x would skip every
// script. No systemd runs in the root: one root has none at all (as in a
// chroot or a container), the other a stand-in systemctl that records its
// calls while /run/systemd/system says systemd runs, so the scripts' "enable
// but do not start, try-restart on upgrade" can be seen.
//
// Heavy (a Debian root, three builds, a real containerd): run it under
// flock /tmp/cacheplane-e2e.lock.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/sdnotify/sdnotifytest"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/systemd"
)

const repo = "../.."

// fakeSystemctl records every call in /var/log/systemctl.log of the root.
const fakeSystemctl = "#!/bin/sh\necho \"$*\" >> /var/log/systemctl.log\nexit 0\n"

func TestPackagesInstall(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("installing into a Debian root needs root (dpkg --root runs the maintainer scripts in a chroot)")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "setpriv", "strace", "git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make deps installs it): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	pristine := cachedDebianRoot(ctx, t, repo)

	// Two builds: the commit's own version, then "an upgrade" of it.
	t0 := time.Now()
	out1 := filepath.Join(t.TempDir(), "v1")
	images := imagesDir(repo)
	debs1, err := Build(ctx, Options{Out: out1, Images: images, Root: repo})
	if err != nil {
		t.Fatal(err)
	}
	v1 := debField(t, debs1[0], "Version")
	out2 := filepath.Join(t.TempDir(), "v2")
	debs2, err := Build(ctx, Options{Out: out2, Images: images, Root: repo, Version: v1 + ".1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d+%d packages (version %s) in %s", len(debs1), len(debs2), v1, time.Since(t0).Round(time.Second))
	for _, d := range append(slices.Clone(debs1), debs2...) {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %.1f MB", filepath.Base(d), float64(st.Size())/1e6)
	}
	checkControl(t, debs1)

	t.Run("maintainer scripts under systemd", func(t *testing.T) {
		r := newRoot(ctx, t, pristine, true)
		r.dpkg(ctx, "-i", debs1...)
		log := r.systemctlLog()
		for _, unit := range []string{"cacheplane-coordinator.service", "cacheplane-agent.service"} {
			// deb-systemd-helper enables through systemctl preset when systemd runs.
			if !containsLine(log, "preset "+unit) {
				t.Errorf("first install: %s not enabled (systemctl calls: %q)", unit, log)
			}
		}
		for _, l := range log {
			if regexp.MustCompile(`\b(start|restart|try-restart|reload-or-restart)\b`).MatchString(l) {
				t.Errorf("first install started something: systemctl %s", l)
			}
		}
		// An administrator's change to a conffile survives the upgrade.
		r.write("etc/cacheplane/agent.json", `{"address": "127.0.0.1", "coordinators": ["10.0.0.1:7401"]}`, 0o600)
		r.resetSystemctlLog()
		r.dpkg(ctx, "-i", debs2...)
		log = r.systemctlLog()
		for _, unit := range []string{"cacheplane-coordinator.service", "cacheplane-agent.service"} {
			if !containsLine(log, "try-restart "+unit) {
				t.Errorf("upgrade: %s not try-restarted (systemctl calls: %q)", unit, log)
			}
		}
		for _, l := range log {
			if strings.Contains(l, "stop ") || regexp.MustCompile(`^(--\S+ )*start `).MatchString(l) {
				t.Errorf("upgrade stopped or started something: systemctl %s", l)
			}
		}
		if b := r.read("etc/cacheplane/agent.json"); !strings.Contains(b, "10.0.0.1:7401") {
			t.Errorf("upgrade replaced the edited conffile: %s", b)
		}
		for _, p := range []string{"cacheplane-coordinator", "cacheplane-agent", "cacheplane"} {
			if got := r.query(ctx, "${Status} ${Version}", p); got != "install ok installed "+v1+".1" {
				t.Errorf("%s after upgrade: %q", p, got)
			}
		}
		// Removal stops the daemon; purge keeps the coordinator's state.
		r.resetSystemctlLog()
		r.dpkg(ctx, "--remove", "cacheplane-agent")
		if log := r.systemctlLog(); !containsLine(log, "stop cacheplane-agent.service") {
			t.Errorf("remove: agent not stopped (systemctl calls: %q)", log)
		}
		if _, err := os.Stat(r.path("etc/cacheplane/agent.json")); err != nil {
			t.Errorf("remove (not purge) deleted the conffile: %v", err)
		}
		r.write("var/lib/cacheplane/coordinator/raft.db", "state", 0o600)
		r.dpkg(ctx, "--purge", "cacheplane-coordinator")
		if _, err := os.Stat(r.path("etc/cacheplane/coordinator.json")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("purge left the conffile: %v", err)
		}
		if _, err := os.Stat(r.path("var/lib/cacheplane/coordinator/raft.db")); err != nil {
			t.Errorf("purge deleted the coordinator's state: %v", err)
		}
	})

	t.Run("installed files and running daemons", func(t *testing.T) {
		r := newRoot(ctx, t, pristine, false)
		r.dpkg(ctx, "-i", debs1...)
		r.checkFiles(ctx, t)
		r.runDaemons(ctx, t, debs2)
	})
}

// ---------------------------------------------------------------------------
// The package files themselves

func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--field", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --field %s %s: %v", deb, field, err)
	}
	return strings.TrimSpace(string(out))
}

func checkControl(t *testing.T, debs []string) {
	t.Helper()
	want := map[string]struct{ depends, conffiles string }{
		"cacheplane-coordinator": {"adduser, init-system-helpers", "/etc/cacheplane/coordinator.json"},
		"cacheplane-agent":       {"containerd, runc, iproute2, init-system-helpers", "/etc/cacheplane/agent.json"},
		"cacheplane":             {"", ""},
	}
	if len(debs) != len(want) {
		t.Fatalf("%d packages: %q", len(debs), debs)
	}
	for _, d := range debs {
		name := debField(t, d, "Package")
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected package %s", name)
			continue
		}
		if got := debField(t, d, "Depends"); got != w.depends {
			t.Errorf("%s Depends: %q, want %q", name, got, w.depends)
		}
		dir := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "--control", d, dir).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb --control: %v: %s", err, out)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "conffiles"))
		if got := strings.TrimSpace(string(b)); got != w.conffiles {
			t.Errorf("%s conffiles: %q, want %q", name, got, w.conffiles)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			_, err := os.Stat(filepath.Join(dir, s))
			if (name != "cacheplane") != (err == nil) {
				t.Errorf("%s: maintainer script %s: %v", name, s, err)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// A Debian root

type root struct {
	t   *testing.T
	dir string
}

func newRoot(ctx context.Context, t *testing.T, pristine string, systemdRuns bool) *root {
	t.Helper()
	// A short path: members' unix sockets under the agent's state
	// directory must stay under 108 bytes.
	base, err := os.MkdirTemp("", "cpk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	r := &root{t: t, dir: filepath.Join(base, "root")}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyRoot(ctx, t, pristine, r.dir)
	// The coordinator runs as its own user from this tree: the temporary
	// directories above it must be searchable (t.TempDir makes them 0700).
	for d := filepath.Dir(r.dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if systemdRuns {
		if err := os.MkdirAll(r.path("run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
		r.write("usr/bin/systemctl", fakeSystemctl, 0o755)
	}
	return r
}

func (r *root) path(p string) string { return filepath.Join(r.dir, p) }

func (r *root) write(p, text string, mode os.FileMode) {
	r.t.Helper()
	if err := os.WriteFile(r.path(p), []byte(text), mode); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Chmod(r.path(p), mode); err != nil {
		r.t.Fatal(err)
	}
}

func (r *root) read(p string) string {
	r.t.Helper()
	b, err := os.ReadFile(r.path(p))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

func (r *root) dpkg(ctx context.Context, action string, args ...string) {
	r.t.Helper()
	cmd := exec.CommandContext(ctx, "dpkg", append([]string{"--root=" + r.dir, action}, args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("dpkg %s: %v\n%s", action, err, out)
	}
	r.t.Logf("dpkg %s %d package(s): ok", action, len(args))
}

func (r *root) query(ctx context.Context, format, pkg string) string {
	r.t.Helper()
	out, err := exec.CommandContext(ctx, "dpkg-query", "--admindir="+r.path("var/lib/dpkg"), "-W", "-f="+format, pkg).Output()
	if err != nil {
		r.t.Fatalf("dpkg-query %s: %v", pkg, err)
	}
	return string(out)
}

func (r *root) systemctlLog() []string {
	b, err := os.ReadFile(r.path("var/log/systemctl.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (r *root) resetSystemctlLog() { os.Remove(r.path("var/log/systemctl.log")) }

func containsLine(lines []string, suffix string) bool {
	for _, l := range lines {
		if strings.HasSuffix(l, suffix) {
			return true
		}
	}
	return false
}

// passwd looks name up in the root's /etc/passwd (uid, gid, home, shell).
func (r *root) passwd(name string) (uid, gid int, home, shell string) {
	r.t.Helper()
	for _, l := range strings.Split(r.read("etc/passwd"), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == name {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			return uid, gid, f[5], f[6]
		}
	}
	r.t.Fatalf("no user %s in the root's /etc/passwd", name)
	return
}

func (r *root) groupID(name string) int {
	r.t.Helper()
	for _, l := range strings.Split(r.read("etc/group"), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 4 && f[0] == name {
			id, _ := strconv.Atoi(f[2])
			return id
		}
	}
	r.t.Fatalf("no group %s in the root's /etc/group", name)
	return 0
}

// checkFiles: every installed file with its owner and mode, the user, the
// conffiles, the enabled units, and nothing started.
func (r *root) checkFiles(ctx context.Context, t *testing.T) {
	uid, gid, home, shell := r.passwd("cacheplane")
	if uid == 0 || uid >= 1000 || gid != r.groupID("cacheplane") {
		t.Errorf("cacheplane user: uid %d gid %d, want a system user with its own group", uid, gid)
	}
	if home != "/var/lib/cacheplane/coordinator" || shell != "/usr/sbin/nologin" {
		t.Errorf("cacheplane user: home %s shell %s", home, shell)
	}
	type want struct {
		uid, gid int
		mode     os.FileMode
	}
	files := map[string]want{
		"usr/bin/cacheplane-coordinator":                    {0, 0, 0o755},
		"usr/bin/cacheplane-agent":                          {0, 0, 0o755},
		"usr/bin/cacheplane":                                {0, 0, 0o755},
		"lib/systemd/system/cacheplane-coordinator.service": {0, 0, 0o644},
		"lib/systemd/system/cacheplane-agent.service":       {0, 0, 0o644},
		"etc/cacheplane":                                    {0, 0, 0o755 | fs.ModeDir},
		"etc/cacheplane/coordinator.json":                   {0, gid, 0o640},
		"etc/cacheplane/agent.json":                         {0, 0, 0o600},
		"var/lib/cacheplane":                                {0, 0, 0o755 | fs.ModeDir},
		"var/lib/cacheplane/coordinator":                    {uid, gid, 0o700 | fs.ModeDir},
		"var/lib/cacheplane/agent":                          {0, 0, 0o700 | fs.ModeDir},
		"usr/share/cacheplane/images/images.json":           {0, 0, 0o644},
		"usr/share/doc/cacheplane-coordinator/install.md":   {0, 0, 0o644},
		"usr/share/doc/cacheplane-agent/install.md":         {0, 0, 0o644},
		"usr/share/doc/cacheplane/cli.md":                   {0, 0, 0o644},
	}
	images, _ := filepath.Glob(filepath.Join(imagesDir(repo), "*.tar"))
	if len(images) == 0 {
		t.Fatalf("no images in %s (run make images)", imagesDir(repo))
	}
	for _, im := range images {
		files["usr/share/cacheplane/images/"+filepath.Base(im)] = want{0, 0, 0o644}
		a, _ := os.ReadFile(im)
		b, err := os.ReadFile(r.path("usr/share/cacheplane/images/" + filepath.Base(im)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("image %s not installed as built (%v)", filepath.Base(im), err)
		}
	}
	for p, w := range files {
		st, err := os.Lstat(r.path(p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != w.uid || int(sys.Gid) != w.gid || st.Mode() != w.mode {
			t.Errorf("/%s: %d:%d %s, want %d:%d %s", p, sys.Uid, sys.Gid, st.Mode(), w.uid, w.gid, w.mode)
		}
	}
	for _, unit := range systemd.Units {
		want, _ := systemd.File(unit)
		if got := r.read("lib/systemd/system/" + unit); got != string(want) {
			t.Errorf("installed %s differs from systemd/%s", unit, unit)
		}
		// Enabled (deb-systemd-helper, no systemd running), not started.
		link, err := os.Readlink(r.path("etc/systemd/system/multi-user.target.wants/" + unit))
		if err != nil || link != "/lib/systemd/system/"+unit {
			t.Errorf("%s not enabled: %q %v", unit, link, err)
		}
	}
	for pkg, conf := range map[string]string{"cacheplane-coordinator": "/etc/cacheplane/coordinator.json", "cacheplane-agent": "/etc/cacheplane/agent.json"} {
		if got := r.query(ctx, "${Conffiles}", pkg); !strings.Contains(got, conf+" ") {
			t.Errorf("%s conffiles in the dpkg database: %q", pkg, got)
		}
	}
	// Every file a package lists is installed, and nothing else under our paths.
	for _, pkg := range []string{"cacheplane-coordinator", "cacheplane-agent", "cacheplane"} {
		for _, p := range strings.Fields(r.query(ctx, "${db-fsys:Files}", pkg)) {
			if _, err := os.Lstat(r.path(p)); err != nil {
				t.Errorf("%s lists %s: %v", pkg, p, err)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Running the installed daemons as their units would

// unitCommand is the installed unit's ExecStart with every absolute path
// mapped into the root (the binary, the config under /etc/cacheplane).
func (r *root) unitCommand(t *testing.T, unit string) (argv []string, u systemd.Unit) {
	t.Helper()
	u, err := systemd.Parse(r.read("lib/systemd/system/" + unit))
	if err != nil {
		t.Fatal(err)
	}
	argv, err = u.ExecStart()
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range argv {
		if strings.HasPrefix(a, "/") {
			argv[i] = r.path(a)
		}
	}
	return argv, u
}

// proc is a daemon started by the test.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, argv, env []string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), log: &syncBuffer{}}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL, true, 10*time.Second)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, lastLines(p.log.String(), 30))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the process (group: the strace wrapper and its tracee too)
// and waits for it.
func (p *proc) stop(sig syscall.Signal, group bool, within time.Duration) error {
	if p.exited() {
		return p.err
	}
	pid := p.cmd.Process.Pid
	if group {
		pid = -pid
	}
	_ = syscall.Kill(pid, sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %s of %s", p.name, within, sig)
	}
}

// stopChild signals the process's only child (strace's tracee) and waits
// for the process: strace exits with the tracee's status.
func (p *proc) stopChild(sig syscall.Signal, within time.Duration) error {
	child := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(p.cmd.Process.Pid) {
			child, _ = strconv.Atoi(filepath.Base(filepath.Dir(f)))
		}
	}
	if child == 0 {
		return fmt.Errorf("%s: no child process to signal", p.name)
	}
	_ = syscall.Kill(child, sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %s of %s", p.name, within, sig)
	}
}

// unitEnv is the environment systemd gives the unit's process.
func unitEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, extra...)
}

// capNames turns CapabilityBoundingSet= into setpriv's --bounding-set.
func capNames(u systemd.Unit) string {
	set := []string{"-all"}
	for _, c := range strings.Fields(u.Get("Service", "CapabilityBoundingSet")) {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return strings.Join(set, ",")
}

func sdnotifyWired(t *testing.T, pkg string) bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return slices.Contains(strings.Fields(string(out)), "github.com/cacheplane/cacheplane/internal/sdnotify")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *root) runDaemons(ctx context.Context, t *testing.T, upgrade []string) {
	uid, gid, _, _ := r.passwd("cacheplane")
	// A loopback address of our own: members of other tests use 127.0.0.x.
	ip := fmt.Sprintf("127.0.%d.%d", 100+randInt(100), 2+randInt(250))
	raftAddr, httpAddr := testutil.Addr(t, "127.0.0.1"), testutil.Addr(t, "127.0.0.1")
	socket := r.path("run/cacheplane/admin.sock")
	coordConf, _ := json.MarshalIndent(map[string]any{
		"id": "pkgtest-c1", "raft_addr": raftAddr, "http_addr": httpAddr, "bootstrap": true,
		"data_dir": r.path("var/lib/cacheplane/coordinator"), "socket": socket, "log_level": "info",
	}, "", "  ")
	r.write("etc/cacheplane/coordinator.json", string(coordConf), 0o640)
	if err := os.Chown(r.path("etc/cacheplane/coordinator.json"), 0, gid); err != nil {
		t.Fatal(err)
	}
	namespace := "cacheplane-pkgtest-" + randomHex(4)
	t.Cleanup(func() { purgeNamespace(t, namespace, r.path("var/lib/cacheplane/agent/logs")) })

	// The NOTIFY_SOCKET, writable by the coordinator's user as systemd's is.
	notifyC, notifyA := sdnotifytest.Listen(t), sdnotifytest.Listen(t)
	for _, s := range []*sdnotifytest.Socket{notifyC, notifyA} {
		os.Chmod(filepath.Dir(s.Path), 0o755)
		os.Chmod(s.Path, 0o777)
	}
	wiredC := sdnotifyWired(t, "github.com/cacheplane/cacheplane/cmd/coordinator")
	wiredA := sdnotifyWired(t, "github.com/cacheplane/cacheplane/cmd/agent")
	const watchdog = 2 * time.Second // the units say 30s: shorter to see pings soon

	// --- the coordinator: User=cacheplane, CapabilityBoundingSet= (none),
	// NoNewPrivileges, UMask=0077, RuntimeDirectory=cacheplane 0700,
	// under strace to check its system calls against SystemCallFilter=.
	argv, unit := r.unitCommand(t, "cacheplane-coordinator.service")
	if u := unit.Get("Service", "User"); u != "cacheplane" {
		t.Fatalf("coordinator User=%q", u)
	}
	if err := os.MkdirAll(r.path("run/cacheplane"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(r.path("run/cacheplane"), uid, gid)
	traceDir := filepath.Join(filepath.Dir(r.dir), "trace")
	if err := os.Mkdir(traceDir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(traceDir, 0o777)
	trace := filepath.Join(traceDir, "coordinator.strace")
	wrap := []string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups",
		"--no-new-privs", "--bounding-set=" + capNames(unit), "--inh-caps=-all", "--",
		"sh", "-c", `umask 0077 && exec strace -f -qq -o "$0" "$@"`, trace}
	env := unitEnv(notifyC.Env(), "WATCHDOG_USEC="+strconv.Itoa(int(watchdog/time.Microsecond)),
		"USER=cacheplane", "LOGNAME=cacheplane", "HOME="+r.path("var/lib/cacheplane/coordinator"), "SHELL=/usr/sbin/nologin",
		"RUNTIME_DIRECTORY="+r.path("run/cacheplane"), "STATE_DIRECTORY="+r.path("var/lib/cacheplane/coordinator"))
	coord := start(t, "coordinator", append(wrap, argv...), env)
	client := api.NewClient(socket)
	t.Cleanup(client.Close)
	testutil.WaitFor(t, 60*time.Second, func() error {
		if coord.exited() {
			t.Fatalf("coordinator exited: %v\n%s", coord.err, lastLines(coord.log.String(), 20))
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := client.Cluster(cctx)
		if err == nil && st.LeaderID != "pkgtest-c1" {
			err = fmt.Errorf("leader %q", st.LeaderID)
		}
		return err
	})
	st, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != uid || st.Mode().Perm() != 0o600 {
		t.Errorf("admin socket: uid %d mode %s, want %d 0600", sys.Uid, st.Mode().Perm(), uid)
	}
	if _, err := os.Stat(r.path("var/lib/cacheplane/coordinator/raft.db")); err != nil {
		t.Errorf("no Raft state in the state directory: %v", err)
	}
	checkNotify(t, "coordinator", notifyC, wiredC, watchdog)

	// --- the agent: root with the unit's bounding set and NoNewPrivileges.
	if _, err := os.Stat(runtime.DefaultSocket); err != nil {
		t.Fatalf("containerd is not running (%v): make deps (scripts/ensure-containerd.sh) starts it", err)
	}
	// The agent's first start joins with a token of the installed CLI.
	tokOut, err := exec.CommandContext(ctx, r.path("usr/bin/cacheplane"), "--socket", socket, "hosts-token", "pkgtest-h1").CombinedOutput()
	if err != nil {
		t.Fatalf("installed CLI: hosts-token: %v\n%s", err, tokOut)
	}
	agentConf, _ := json.MarshalIndent(map[string]any{
		"host_id": "pkgtest-h1", "address": ip, "coordinators": []string{httpAddr}, "memory_mb": 2048,
		"join_token": strings.TrimSpace(string(tokOut)), "namespace": namespace,
		"data_dir": r.path("var/lib/cacheplane/agent"), "image_dir": r.path("usr/share/cacheplane/images"),
		"metrics_addr": "off", "log_level": "info",
	}, "", "  ")
	r.write("etc/cacheplane/agent.json", string(agentConf), 0o600)
	aArgv, aUnit := r.unitCommand(t, "cacheplane-agent.service")
	aWrap := []string{"setpriv", "--no-new-privs", "--bounding-set=" + capNames(aUnit), "--inh-caps=-all", "--",
		"sh", "-c", `umask 0077 && exec "$0" "$@"`}
	aEnv := unitEnv(notifyA.Env(), "WATCHDOG_USEC="+strconv.Itoa(int(watchdog/time.Microsecond)),
		"STATE_DIRECTORY="+r.path("var/lib/cacheplane/agent"))
	agent := start(t, "agent", append(aWrap, aArgv...), aEnv)
	waitHost(ctx, t, client, agent, "pkgtest-h1")
	checkNotify(t, "agent", notifyA, wiredA, watchdog)

	// The installed CLI speaks to the admin socket.
	out, err := exec.CommandContext(ctx, r.path("usr/bin/cacheplane"), "--socket", socket, "hosts", "--json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pkgtest-h1") {
		t.Fatalf("installed CLI: hosts: %v\n%s", err, out)
	}

	// A starter addon from the packaged images (no registry).
	resp, err := client.AddonCreate(ctx, api.AddonCreateRequest{App: "pkgtest", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Minute, func() error {
		if agent.exited() {
			t.Fatalf("agent exited: %v", agent.err)
		}
		a, err := client.Addon(ctx, resp.Addon.ID)
		if err == nil && a.Status != api.AddonRunning {
			err = fmt.Errorf("addon %s", a.Status)
		}
		return err
	})
	envs, err := client.Env(ctx, "pkgtest")
	if err != nil {
		t.Fatal(err)
	}
	var url string
	for _, v := range envs.Vars {
		if v.Name == "REDIS_URL" {
			url = v.Value
		}
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	opt.MaxRetries, opt.PoolSize = -1, 1
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	conn := rc.Conn()
	defer conn.Close()
	runID, up1, clientID := redisIdentity(ctx, t, conn)
	if err := conn.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// No member process is in the agent's process tree: containerd's shims
	// start them (under systemd: in containerd.service's cgroup, not the
	// agent unit's), which is what lets KillMode=process stop the agent
	// alone.
	pids := memberPids(ctx, t, namespace, r.path("var/lib/cacheplane/agent/logs"))
	if len(pids) < 2 {
		t.Fatalf("members running: %v, want a redis and an haproxy", pids)
	}
	for id, pid := range pids {
		if descendsFrom(pid, agent.cmd.Process.Pid) {
			t.Errorf("member %s (pid %d) descends from the agent (pid %d)", id, pid, agent.cmd.Process.Pid)
		}
	}

	// --- upgrade: the v2 packages over v1 (no systemd in this root: the
	// restart is done here as try-restart with KillMode=process would:
	// SIGTERM to the main process only, then ExecStart again).
	r.dpkg(ctx, "-i", upgrade...)
	if err := agent.stop(syscall.SIGTERM, false, 30*time.Second); err != nil {
		t.Fatalf("agent stop: %v\n%s", err, lastLines(agent.log.String(), 20))
	}
	checkStopping(t, "agent", notifyA, wiredA)
	notifyA.Drain()
	newVersion, err := exec.CommandContext(ctx, r.path("usr/bin/cacheplane-agent"), "--version").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	agent2 := start(t, "agent (upgraded)", append(aWrap, aArgv...), aEnv)
	waitHost(ctx, t, client, agent2, "pkgtest-h1")
	checkNotify(t, "upgraded agent", notifyA, wiredA, watchdog)
	runID2, up2, clientID2 := redisIdentity(ctx, t, conn)
	if runID2 != runID || up2 < up1 || clientID2 != clientID {
		t.Errorf("redis restarted or the client was dropped by the agent's upgrade: run_id %s -> %s, uptime %d -> %d s, client id %d -> %d",
			runID, runID2, up1, up2, clientID, clientID2)
	}
	if v, err := conn.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("after the agent's upgrade: GET k = %q, %v", v, err)
	}
	t.Logf("agent upgraded to %s: redis run_id %s kept, uptime %d -> %d s, same client connection", strings.TrimSpace(string(newVersion)), runID, up1, up2)

	// The coordinator stops cleanly on SIGTERM (exit 0: strace passes the
	// tracee's status on), then its system calls are checked.
	if err := coord.stopChild(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("coordinator stop: %v", err)
	}
	checkStopping(t, "coordinator", notifyC, wiredC)
	checkSyscalls(ctx, t, unit, trace)
	if err := agent2.stop(syscall.SIGTERM, false, 30*time.Second); err != nil {
		t.Errorf("agent stop: %v", err)
	}
}

func randInt(n int) int {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return (int(b[0])<<8 | int(b[1])) % n
}

func waitHost(ctx context.Context, t *testing.T, client *api.Client, agent *proc, id string) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, func() error {
		if agent.exited() {
			t.Fatalf("%s exited: %v\n%s", agent.name, agent.err, lastLines(agent.log.String(), 20))
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		hs, err := client.Hosts(cctx)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.ID == id {
				if h.State != api.HostReady {
					return fmt.Errorf("host %s is %s", id, h.State)
				}
				return nil
			}
		}
		return fmt.Errorf("host %s not registered", id)
	})
}

// checkNotify: once the daemon calls internal/sdnotify (cmd/... imports
// it), READY=1 must arrive, then WATCHDOG=1. Until then the unit's
// Type=notify would time out its start: the test says so.
func checkNotify(t *testing.T, name string, s *sdnotifytest.Socket, wired bool, watchdog time.Duration) {
	t.Helper()
	if !wired {
		t.Logf("%s: does not call internal/sdnotify yet: READY=1/WATCHDOG=1 not checked (Type=notify needs them)", name)
		return
	}
	if _, seen, err := s.WaitFor("READY=1", 30*time.Second); err != nil {
		t.Errorf("%s: %v", name, err)
	} else if len(seen) > 0 {
		t.Logf("%s: before READY: %q", name, seen)
	}
	if _, _, err := s.WaitFor("WATCHDOG=1", 3*watchdog); err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	t.Logf("%s: READY=1, then WATCHDOG=1 (WATCHDOG_USEC %s)", name, watchdog)
}

func checkStopping(t *testing.T, name string, s *sdnotifytest.Socket, wired bool) {
	t.Helper()
	if !wired {
		return
	}
	if _, _, err := s.WaitFor("STOPPING=1", 5*time.Second); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

func redisIdentity(ctx context.Context, t *testing.T, conn *redis.Conn) (runID string, uptime, clientID int64) {
	t.Helper()
	info, err := conn.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "run_id:"); ok {
			runID = v
		}
		if v, ok := strings.CutPrefix(l, "uptime_in_seconds:"); ok {
			uptime, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if clientID, err = conn.ClientID(ctx).Result(); err != nil {
		t.Fatal(err)
	}
	if runID == "" {
		t.Fatalf("no run_id in INFO server")
	}
	return runID, uptime, clientID
}

// memberPids lists the host pids of the members running in namespace.
func memberPids(ctx context.Context, t *testing.T, namespace, logDir string) map[string]int {
	t.Helper()
	rt, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: namespace, LogDir: logDir})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	sts, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, st := range sts {
		if st.Pid > 0 {
			pids[st.ID] = st.Pid
		}
	}
	return pids
}

func descendsFrom(pid, ancestor int) bool {
	for pid > 1 {
		if pid == ancestor {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

var straceCall = regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)`)

// checkSyscalls: every system call the coordinator made (from its own
// execve on) is allowed by the unit's SystemCallFilter=; a call outside it
// would fail with EPERM (SystemCallErrorNumber=) under systemd.
func checkSyscalls(ctx context.Context, t *testing.T, unit systemd.Unit, trace string) {
	t.Helper()
	allowed, err := systemd.SyscallSet(ctx, unit["Service"]["SystemCallFilter"])
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatalf("strace output: %v", err)
	}
	used := map[string]int{}
	seenExec := false
	for _, l := range strings.Split(string(b), "\n") {
		m := straceCall.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if !seenExec {
			// The first line is strace's own execve of the coordinator.
			seenExec = m[1] == "execve"
			continue
		}
		used[m[1]]++
	}
	if len(used) == 0 {
		t.Fatalf("no system calls read from %s", trace)
	}
	var denied []string
	for c := range used {
		if !allowed[c] {
			denied = append(denied, fmt.Sprintf("%s (%d)", c, used[c]))
		}
	}
	slices.Sort(denied)
	t.Logf("coordinator: %d distinct system calls, all checked against SystemCallFilter=%q", len(used), unit["Service"]["SystemCallFilter"])
	if len(denied) > 0 {
		t.Errorf("coordinator made system calls its unit denies: %s", strings.Join(denied, ", "))
	}
}

func purgeNamespace(t *testing.T, namespace, logDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: namespace, LogDir: logDir})
	if err != nil {
		t.Logf("purge %s: %v", namespace, err)
		return
	}
	defer rt.Close()
	if err := rt.Purge(ctx); err != nil {
		t.Logf("purge %s: %v", namespace, err)
	}
}

// imagesDir is where make images put the images: $CACHEPLANE_IMAGES (as
// make test sets it), else <repo>/.dev/images.
func imagesDir(repo string) string {
	if d := os.Getenv("CACHEPLANE_IMAGES"); d != "" {
		return d
	}
	return filepath.Join(repo, ".dev", "images")
}

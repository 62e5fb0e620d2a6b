package redisctl

// Helpers of the tests that start real redis-server and redis-sentinel
// processes, each "host" on its own loopback address (127.0.0.61-63) and
// a free port. Processes run in their own process group and are killed at
// the end of the test; every wait polls with a deadline. A test skips when
// its binary is not installed.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/redis/go-redis/v9"
)

// testPassword is the fleet credential (FleetUser, the sentinels'
// password); testAppPassword the app's default user's.
const (
	testPassword    = "pw_redisctl-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
	testAppPassword = "app_redisctl-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"
)

// aclLines are the ACL lines of a member as agent/render writes them.
func aclLines() []string {
	return []string{
		"user default on >" + testAppPassword + " " + strings.Join(AppRules(), " "),
		"user " + FleetUser + " on >" + testPassword + " " + strings.Join(FleetRules(), " "),
		"masteruser " + FleetUser, "masterauth " + testPassword,
	}
}

// Loopback "hosts".
const (
	ip1 = "127.0.0.61"
	ip2 = "127.0.0.62"
	ip3 = "127.0.0.63"
)

func needBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): %v", name, err)
	}
	return p
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

// proc is a process started by a test, killed with its process group when
// the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		out := p.out.String()
		if strings.Contains(out, testPassword) {
			t.Errorf("%s printed the password", p.name)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, strings.ReplaceAll(out, testPassword, "<password>"))
		}
	})
	return p
}

func (p *proc) kill(t *testing.T) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// alive fails the test at once when the process has exited.
func (p *proc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited:\n%s", p.name, strings.ReplaceAll(p.out.String(), testPassword, "<password>"))
	default:
	}
}

func writeConf(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startRedis starts a redis-server on ip (a free port) with the test
// password, as a replica of replicaOf when not empty, with redis's own
// defaults for the settings parameters, and waits until it answers PING.
func startRedis(t *testing.T, ip, replicaOf string) string {
	t.Helper()
	return startRedisACL(t, ip, replicaOf, aclLines(), testPassword)
}

// startRedisACL is startRedis with other ACL lines, reached with the fleet
// password ping (FleetUser), or as the app when ping is testAppPassword.
func startRedisACL(t *testing.T, ip, replicaOf string, acl []string, ping string) string {
	t.Helper()
	bin := needBinary(t, "redis-server")
	port := testutil.FreePort(t, ip)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	dir := t.TempDir()
	lines := []string{
		"bind " + ip, "port " + strconv.Itoa(port), "protected-mode no", "bind-source-addr " + ip,
		"daemonize no", `logfile ""`, "dir " + dir,
		"replica-announce-ip " + ip, "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
	}
	lines = append(lines, acl...)
	if replicaOf != "" {
		h, p, _ := net.SplitHostPort(replicaOf)
		lines = append(lines, "replicaof "+h+" "+p)
	}
	p := startProc(t, "redis "+addr, bin, writeConf(t, dir, "redis.conf", lines...))
	testutil.WaitFor(t, 10*time.Second, func() error {
		p.alive(t)
		if ping == testAppPassword {
			c := redis.NewClient(appOptions(addr))
			defer c.Close()
			return c.Ping(context.Background()).Err()
		}
		return Ping(context.Background(), addr, ping)
	})
	return addr
}

// startSentinel starts a redis-sentinel on ip watching master name at
// primary (quorum 2) and waits until it answers.
func startSentinel(t *testing.T, ip, name, primary string) (string, *proc) {
	t.Helper()
	return startSentinelAuth(t, ip, name, primary, []string{
		"requirepass " + testPassword, "sentinel sentinel-user " + SentinelUser, "sentinel sentinel-pass " + testPassword,
		"sentinel auth-user " + name + " " + FleetUser, "sentinel auth-pass " + name + " " + testPassword,
	}, testPassword)
}

// startSentinelAuth is startSentinel with other auth lines, reached with
// password ping ("" for none).
func startSentinelAuth(t *testing.T, ip, name, primary string, auth []string, ping string) (string, *proc) {
	t.Helper()
	bin := needBinary(t, "redis-sentinel")
	port := testutil.FreePort(t, ip)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	dir := t.TempDir()
	h, pp, _ := net.SplitHostPort(primary)
	conf := writeConf(t, dir, "sentinel.conf",
		"bind "+ip, "port "+strconv.Itoa(port), "protected-mode no", "bind-source-addr "+ip,
		"daemonize no", `logfile ""`, "dir "+dir,
		"sentinel announce-ip "+ip, "sentinel resolve-hostnames no",
		"sentinel monitor "+name+" "+h+" "+pp+" 2",
		// Failovers in these tests are asked for; never on a slow PING.
		"sentinel down-after-milliseconds "+name+" 30000",
		"sentinel failover-timeout "+name+" 10000",
	)
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(strings.Join(auth, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := startProc(t, "sentinel "+addr, bin, conf)
	testutil.WaitFor(t, 10*time.Second, func() error {
		p.alive(t)
		_, err := MasterAddr(context.Background(), addr, ping, name)
		return err
	})
	return addr, p
}

// business is a business addon without the proxies: primary on ip1,
// replica on ip2, sentinels on ip1-ip3.
type business struct {
	name             string
	primary, replica string
	sentinels        []string
}

// startBusiness starts a business addon and waits until the replica is in
// sync and every sentinel knows the replica and the two other sentinels.
func startBusiness(t *testing.T, name string) business {
	t.Helper()
	b := business{name: name}
	b.primary = startRedis(t, ip1, "")
	b.replica = startRedis(t, ip2, b.primary)
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := GetReplication(context.Background(), b.replica, testPassword)
		if err != nil {
			return err
		}
		if r.LinkStatus != "up" {
			return fmt.Errorf("replica link %s", r.LinkStatus)
		}
		return nil
	})
	for _, ip := range []string{ip1, ip2, ip3} {
		s, _ := startSentinel(t, ip, name, b.primary)
		b.sentinels = append(b.sentinels, s)
	}
	for _, s := range b.sentinels {
		testutil.WaitFor(t, 20*time.Second, func() error {
			k, err := Known(context.Background(), s, testPassword, name)
			if err != nil {
				return err
			}
			if !Has(k.Replicas, b.replica) || len(k.Sentinels) != 2 {
				return fmt.Errorf("sentinel %s knows replicas %v, sentinels %v", s, k.Replicas, k.Sentinels)
			}
			return nil
		})
	}
	return b
}

// appOptions reach the member at addr as the app: its default user.
func appOptions(addr string) *redis.Options {
	o := MemberOptions(addr, "")
	o.Username, o.Password = "default", testAppPassword
	return o
}

// deadAddr is an address on ip where nothing listens.
func deadAddr(t *testing.T, ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(testutil.FreePort(t, ip)))
}

//go:build scale && bench

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// The simulated agents run in child processes (this test binary run again
// as TestScaleSimulator), each holding a shard of the hosts: one process
// has 20,000 open files here and cannot raise it, and 10,000 agents'
// connections, their reconnections after a leader's death and the
// entrypoint listeners of placed addons do not fit in one. The test
// (simFleet) drives the shards over a pipe pair (fd 3: requests, fd 4:
// replies, one JSON object per line, one request at a time) and merges
// what they measure: heartbeat latencies are sent back whole, so the
// percentiles are those of every agent together, as in one process.

// simEnv marks a child simulator process (its value: the shard's number).
const simEnv = "CACHEPLANE_SCALE_SIM_CHILD"

// simReq is one request to a simulator process.
type simReq struct {
	Op      string        // join, register, lat-start, lat-stop, lat-count, status, lose
	Hosts   []int         `json:",omitempty"` // join: the shard's host numbers
	Tokens  []string      `json:",omitempty"` // join: their join tokens
	Leader  string        `json:",omitempty"` // join: the leader's peer address
	Peers   []string      `json:",omitempty"` // join: every coordinator's peer address
	Workers int           `json:",omitempty"` // join, register: requests at once
	HB      time.Duration // register: the agents' heartbeat interval
	Busy    []string      `json:",omitempty"` // lose: addons whose hosts are not to be lost
}

// simResp is its answer.
type simResp struct {
	Err     string  `json:",omitempty"`
	Durs    []int64 `json:",omitempty"` // lat-stop: successful heartbeats' latencies (ns)
	N, Errs int     `json:",omitempty"` // lat-stop, lat-count: successes, errors
	First   string  `json:",omitempty"` // lat-stop: the first error
	Watches int     `json:",omitempty"` // status: assignment watches open
	FDs     int     `json:",omitempty"` // status: open files of the process
	HBBytes int     `json:",omitempty"` // status: the first agent's heartbeat body
	// lose: the host silenced, its members and business addons ("" : none fits).
	ID      string   `json:",omitempty"`
	Members []string `json:",omitempty"`
	Healed  []string `json:",omitempty"`
}

// TestScaleSimulator is a shard of simulated agents, run by TestScale in
// a child process; run directly it skips.
func TestScaleSimulator(t *testing.T) {
	if os.Getenv(simEnv) == "" {
		t.Skip("a child process of TestScale")
	}
	in, out := os.NewFile(3, "requests"), os.NewFile(4, "replies")
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	var sh simShard
	defer sh.stop()
	for {
		var req simReq
		if err := dec.Decode(&req); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("simulator: %v", err)
			}
			return
		}
		resp := sh.handle(req)
		if err := enc.Encode(resp); err != nil {
			t.Logf("simulator: reply: %v", err)
			return
		}
	}
}

// simShard is one child process's agents.
type simShard struct {
	agents  []*simAgent
	lat     latencies
	watches atomic.Int64
	cancel  context.CancelFunc
}

func (s *simShard) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	for _, a := range s.agents {
		a.hc.CloseIdleConnections()
	}
}

func (s *simShard) handle(req simReq) simResp {
	var resp simResp
	var err error
	switch req.Op {
	case "join":
		err = s.join(req)
	case "register":
		err = s.register(req.Workers, req.HB)
	case "lat-start":
		s.lat.start()
	case "lat-count":
		s.lat.mu.Lock()
		resp.N, resp.Errs = len(s.lat.d), s.lat.errs
		s.lat.mu.Unlock()
	case "lat-stop":
		s.lat.mu.Lock()
		s.lat.on = false
		resp.N, resp.Errs = len(s.lat.d), s.lat.errs
		for _, d := range s.lat.d {
			resp.Durs = append(resp.Durs, int64(d))
		}
		if s.lat.first != nil {
			resp.First = s.lat.first.Error()
		}
		s.lat.mu.Unlock()
	case "status":
		resp.Watches, resp.FDs = int(s.watches.Load()), openFiles(os.Getpid())
		if len(s.agents) > 0 {
			resp.HBBytes = len(mustJSON(s.agents[0].heartbeatRequest(time.Now())))
		}
	case "lose":
		resp.ID, resp.Members, resp.Healed = loseHost(s.agents, req.Busy)
	default:
		err = fmt.Errorf("unknown request %q", req.Op)
	}
	if err != nil {
		resp.Err = err.Error()
	}
	return resp
}

// join makes the shard's agents: each its own key, the token, a
// certificate from POST /v1/join.
func (s *simShard) join(req simReq) error {
	s.agents = make([]*simAgent, len(req.Hosts))
	return forEach(len(req.Hosts), req.Workers, func(k int) error {
		i := req.Hosts[k]
		id, addr := simHostID(i), hostAddr(i)
		tok, err := identity.ParseToken(req.Tokens[k])
		if err != nil {
			return err
		}
		key, csr, err := identity.NewKey(id)
		if err != nil {
			return err
		}
		first := &simAgent{id: id, addr: addr, targets: []string{req.Leader}}
		var ca *x509.Certificate
		first.hc = &http.Client{Transport: newSimTransport(addr, identity.FirstContactConfig(tok.CAHash, &ca)), Timeout: time.Minute}
		var got api.IdentityResponse
		err = first.call(context.Background(), http.MethodPost, "/v1/join",
			api.JoinIdentityRequest{TokenID: tok.ID, Secret: tok.Secret, Kind: api.TokenAgent, Name: id, CSR: csr}, &got)
		first.hc.CloseIdleConnections()
		if err != nil {
			return fmt.Errorf("join %s: %w", id, err)
		}
		cur, err := identity.Parse(key, got.Cert, got.CA)
		if err != nil {
			return err
		}
		h := &identity.Holder{}
		h.Set(cur)
		order := []string{req.Leader}
		for _, p := range req.Peers {
			if p != req.Leader {
				order = append(order, p)
			}
		}
		s.agents[k] = &simAgent{id: id, addr: addr, num: i, targets: order, pinged: map[string]bool{}, started: time.Now(),
			hc: &http.Client{Transport: newSimTransport(addr, h.ClientConfig()), Timeout: 90 * time.Second}}
		return nil
	})
}

// register registers each agent and starts its loops at once, as an agent
// does: started only once all were registered, the first hosts were
// silent for longer than --host-down-after at 10,000 hosts (~35 s of
// registrations) and marked down, a Raft write each.
func (s *simShard) register(workers int, hb time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	return forEach(len(s.agents), workers, func(k int) error {
		a := s.agents[k]
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := a.call(rctx, http.MethodPost, "/v1/agent/register", api.RegisterRequest{Host: api.Host{
			ID: a.id, Address: a.addr, MemoryMB: 64 * 1024, Labels: map[string]string{"zone": fmt.Sprintf("z%d", a.num%3)}}}, nil)
		if err == nil && a.running.CompareAndSwap(false, true) {
			a.run(ctx, hb, &s.lat, &s.watches)
		}
		return err
	})
}

// loseHost silences the first host that runs a business addon's sentinel
// and no member of an addon in busy (agent gone: no heartbeat, no
// liveness) and returns it, its members and its business addons.
func loseHost(agents []*simAgent, busy []string) (string, []string, []string) {
	skip := map[string]bool{}
	for _, id := range busy {
		skip[id] = true
	}
	for _, a := range agents {
		if a.stopped.Load() {
			continue // lost already
		}
		a.mu.Lock()
		sentinel, free := false, true
		for _, m := range a.assigned {
			sentinel = sentinel || m.Role == api.RoleSentinel
			free = free && !skip[m.AddonID]
		}
		if !sentinel || !free {
			a.mu.Unlock()
			continue
		}
		var members, healed []string // healed: the business addons (a starter is never moved)
		for _, m := range a.assigned {
			members = append(members, m.MemberID)
			if m.Role == api.RoleSentinel {
				healed = append(healed, m.AddonID)
			}
		}
		a.mu.Unlock()
		a.stopped.Store(true)
		return a.id, members, healed
	}
	return "", nil, nil
}

// forEach runs f(0..n-1) on k workers, each call tried up to 8 times (an
// election under load answers 503 or "leadership lost"; every call here is
// idempotent), and returns the first error that persists.
func forEach(n, k int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	var failed atomic.Bool
	for range max(k, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := f(i)
				for try := 1; err != nil && try < 8; try++ {
					time.Sleep(time.Duration(try) * 250 * time.Millisecond)
					err = f(i)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// ---------------------------------------------------------------------------
// The test's side

// simProc is one simulator process.
type simProc struct {
	cmd   *exec.Cmd
	enc   *json.Encoder
	dec   *json.Decoder
	hosts []int
	mu    sync.Mutex
}

func (p *simProc) do(req simReq) (simResp, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var resp simResp
	if err := p.enc.Encode(req); err != nil {
		return resp, fmt.Errorf("simulator %d: %s: %w", p.cmd.Process.Pid, req.Op, err)
	}
	if err := p.dec.Decode(&resp); err != nil {
		return resp, fmt.Errorf("simulator %d: %s: %w (its log: %s)", p.cmd.Process.Pid, req.Op, err, p.cmd.Stderr.(*os.File).Name())
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("simulator %d: %s: %s", p.cmd.Process.Pid, req.Op, resp.Err)
	}
	return resp, nil
}

// simFleet is every simulator process of one fleet size.
type simFleet struct{ procs []*simProc }

// simNice is the simulator processes' niceness (CACHEPLANE_SCALE_SIM_NICE,
// default 0: as the coordinators). Real agents run on their own hosts; on
// this machine 10,000 simulated agents share the two CPUs with the three
// coordinators, and a positive value gives the coordinators, the subject,
// the CPU first.
var simNice = envString("CACHEPLANE_SCALE_SIM_NICE", "0")

// simProcs is how many simulator processes hosts agents and addons take:
// CACHEPLANE_SCALE_SIMS, or enough that each holds at most ~8,000 open
// files with every agent reconnecting at once (its old and new
// connections) and a listener per entrypoint placed.
func simProcs(t *testing.T, hosts, addons, perAgent int) int {
	if os.Getenv("CACHEPLANE_SCALE_SIMS") != "" {
		return min(envInt(t, "CACHEPLANE_SCALE_SIMS", 1), hosts)
	}
	need := 2*perAgent*hosts + addons + addons/10
	return min(max(1, (need+7999)/8000), 64)
}

// startSimFleet starts k simulator processes, host i in process i%k; their
// logs go to dir.
func startSimFleet(t *testing.T, k, hosts int, dir string) *simFleet {
	f := &simFleet{}
	for j := range k {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		repR, repW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("simulator-%d.log", j)))
		if err != nil {
			t.Fatal(err)
		}
		args := []string{os.Args[0], "-test.run", "^TestScaleSimulator$", "-test.v", "-test.timeout", "0"}
		if simNice != "0" {
			args = append([]string{"nice", "-n", simNice}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), simEnv+"="+strconv.Itoa(j))
		cmd.ExtraFiles = []*os.File{reqR, repW}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("simulator %d: %v", j, err)
		}
		reqR.Close()
		repW.Close()
		p := &simProc{cmd: cmd, enc: json.NewEncoder(reqW), dec: json.NewDecoder(repR)}
		for i := j; i < hosts; i += k {
			p.hosts = append(p.hosts, i)
		}
		f.procs = append(f.procs, p)
		t.Cleanup(func() {
			reqW.Close() // EOF: the shard stops its agents and exits
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			repR.Close()
			logf.Close()
		})
	}
	return f
}

// all sends each process its request (made by mk) at once and returns the
// answers in process order.
func (f *simFleet) all(mk func(p *simProc) simReq) ([]simResp, error) {
	out := make([]simResp, len(f.procs))
	errs := make([]error, len(f.procs))
	var wg sync.WaitGroup
	for j, p := range f.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[j], errs[j] = p.do(mk(p))
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func (f *simFleet) op(op string) ([]simResp, error) {
	return f.all(func(*simProc) simReq { return simReq{Op: op} })
}

// latStart starts recording heartbeat latencies in every process.
func (f *simFleet) latStart(t *testing.T) {
	if _, err := f.op("lat-start"); err != nil {
		t.Fatal(err)
	}
}

// latCount is how many heartbeats were answered since latStart.
func (f *simFleet) latCount(t *testing.T) int {
	rs, err := f.op("lat-count")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rs {
		n += r.N
	}
	return n
}

// latStop stops recording and merges every process's latencies.
func (f *simFleet) latStop(t *testing.T) (n, errs int, p50, p99 time.Duration, first string) {
	rs, err := f.op("lat-stop")
	if err != nil {
		t.Fatal(err)
	}
	var d []time.Duration
	for _, r := range rs {
		for _, x := range r.Durs {
			d = append(d, time.Duration(x))
		}
		errs += r.Errs
		if first == "" {
			first = r.First
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d) == 0 {
		return 0, errs, 0, 0, first
	}
	pct := func(p float64) time.Duration { return d[min(len(d)-1, int(float64(len(d))*p))] }
	return len(d), errs, pct(0.5), pct(0.99), first
}

// status sums the processes' watches and open files; hbBytes is the first
// agent's heartbeat body.
func (f *simFleet) status(t *testing.T) (watches, fds, hbBytes int) {
	rs, err := f.op("status")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		watches += r.Watches
		fds += r.FDs
	}
	return watches, fds, rs[0].HBBytes
}

// lose silences a host that runs a business addon's sentinel and no
// member of an addon in busy: the first such of the first process that
// has one.
func (f *simFleet) lose(t *testing.T, busy map[string]bool) (id string, members, healed []string) {
	var b []string
	for a := range busy {
		b = append(b, a)
	}
	sort.Strings(b)
	for _, p := range f.procs {
		r, err := p.do(simReq{Op: "lose", Busy: b})
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != "" {
			return r.ID, r.Members, r.Healed
		}
	}
	return "", nil, nil
}

package redisctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Sentinel's answers callers act on.
var (
	// ErrNoGoodReplica: the sentinel refused a failover because it sees no
	// replica it can promote (-NOGOODSLAVE). Right after an addon starts
	// that is transient (the sentinels have not met the replica yet).
	ErrNoGoodReplica = errors.New("no replica can be promoted")
	// ErrFailoverInProgress: a failover of the master is already under way
	// (-INPROG).
	ErrFailoverInProgress = errors.New("a failover is already in progress")
	// ErrNoMajority: no strict majority of the sentinels asked names the
	// same master.
	ErrNoMajority = errors.New("no majority of the sentinels names a primary")
)

// replyError is a sentinel's error reply classified as one of the errors
// above; its text is the reply itself.
type replyError struct {
	kind  error
	reply string
}

func (e *replyError) Error() string { return e.reply }
func (e *replyError) Unwrap() error { return e.kind }

// classify types the error replies callers act on.
func classify(err error) error {
	switch {
	case redis.HasErrorPrefix(err, "NOGOODSLAVE"):
		return &replyError{kind: ErrNoGoodReplica, reply: err.Error()}
	case redis.HasErrorPrefix(err, "INPROG"):
		return &replyError{kind: ErrFailoverInProgress, reply: err.Error()}
	}
	return err
}

// sentinelDo sends one SENTINEL command to the sentinel at addr, logged in
// with password (the fleet credential), within SentinelTimeout and returns
// its answer; the error names the sentinel and the subcommand.
func sentinelDo(ctx context.Context, addr, password string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, SentinelTimeout)
	defer cancel()
	c := redis.NewClient(SentinelOptions(addr, password))
	defer c.Close()
	v, err := c.Do(ctx, append([]any{"SENTINEL"}, args...)...).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: SENTINEL %v: %w", addr, args[0], classify(err))
	}
	return v, nil
}

// MasterAddr asks one sentinel for the address (host:port) of master name.
func MasterAddr(ctx context.Context, sentinel, password, name string) (string, error) {
	v, err := sentinelDo(ctx, sentinel, password, "GET-MASTER-ADDR-BY-NAME", name)
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("sentinel %s: no master named %q", sentinel, name)
		}
		return "", err
	}
	res, ok := v.([]any)
	if !ok || len(res) != 2 {
		return "", fmt.Errorf("sentinel %s: unexpected answer %v", sentinel, v)
	}
	host, _ := res[0].(string)
	port, _ := res[1].(string)
	if _, err := strconv.Atoi(port); err != nil || host == "" {
		return "", fmt.Errorf("sentinel %s: bad master address %v", sentinel, res)
	}
	return net.JoinHostPort(host, port), nil
}

// AskMajority asks every sentinel at once for the address of master name
// and returns the one a strict majority of them names, with how many did.
// Otherwise the error (ErrNoMajority) lists the answers and the sentinels
// that did not answer.
func AskMajority(ctx context.Context, sentinels []string, password, name string) (string, int, error) {
	type answer struct {
		addr string
		err  error
	}
	out := make([]answer, len(sentinels))
	var wg sync.WaitGroup
	for i, s := range sentinels {
		wg.Go(func() { out[i].addr, out[i].err = MasterAddr(ctx, s, password, name) })
	}
	wg.Wait()
	votes := map[string]int{}
	var errs []string
	for _, r := range out {
		if r.err != nil {
			errs = append(errs, r.err.Error())
			continue
		}
		votes[r.addr]++
	}
	for addr, n := range votes {
		if n*2 > len(sentinels) {
			return addr, n, nil
		}
	}
	names := make([]string, 0, len(votes))
	for addr, n := range votes {
		names = append(names, fmt.Sprintf("%s (%d)", addr, n))
	}
	sort.Strings(names)
	msg := fmt.Sprintf("no majority of %d sentinels names a primary for %s", len(sentinels), name)
	if len(names) > 0 {
		msg += "; answers: " + strings.Join(names, ", ")
	}
	if len(errs) > 0 {
		msg += "; unreachable: " + strings.Join(errs, "; ")
	}
	return "", 0, noMajorityError(msg)
}

// noMajorityError is AskMajority's error: ErrNoMajority with the answers.
type noMajorityError string

func (e noMajorityError) Error() string        { return string(e) }
func (e noMajorityError) Is(target error) bool { return target == ErrNoMajority }

// FailoverError is Failover's error when no sentinel accepted: each asked
// sentinel's refusal, in order. errors.Is(err, ErrNoGoodReplica) holds when
// any sentinel answered -NOGOODSLAVE; Count says how many did.
type FailoverError struct {
	Name    string
	Answers []error // one per sentinel asked; each names its sentinel
}

func (e *FailoverError) Error() string {
	parts := make([]string, len(e.Answers))
	for i, err := range e.Answers {
		parts[i] = err.Error()
	}
	if len(parts) == 0 {
		return "failover of " + e.Name + ": no sentinel to ask"
	}
	return "failover of " + e.Name + ": " + strings.Join(parts, "; ")
}

func (e *FailoverError) Unwrap() []error { return e.Answers }

// Count is how many sentinels answered target (e.g. ErrNoGoodReplica).
func (e *FailoverError) Count(target error) int {
	n := 0
	for _, err := range e.Answers {
		if errors.Is(err, target) {
			n++
		}
	}
	return n
}

// Failover asks the sentinels, in order, to fail master name over now
// (SENTINEL FAILOVER) and returns the first that accepted. A sentinel
// answering -INPROG ends the round: a failover is under way already, and
// the *FailoverError returned then satisfies errors.Is(err,
// ErrFailoverInProgress). Only safe when the primary's process is known
// dead or writes on it are paused (Switchover): otherwise the old primary
// keeps taking writes that are lost when Sentinel demotes it.
func Failover(ctx context.Context, sentinels []string, password, name string) (string, error) {
	fe := &FailoverError{Name: name}
	for _, s := range sentinels {
		_, err := sentinelDo(ctx, s, password, "FAILOVER", name)
		if err == nil {
			return s, nil
		}
		fe.Answers = append(fe.Answers, err)
		if errors.Is(err, ErrFailoverInProgress) || ctx.Err() != nil {
			break
		}
	}
	return "", fe
}

// Reset makes one sentinel forget the replicas and sentinels of master
// name (SENTINEL RESET) so that it forgets those that are gone; it
// rediscovers the live sentinels within seconds (hello messages every 2 s)
// and the replicas when it next reads the master's INFO (every 10 s).
// Check with Known that every live member has joined first.
func Reset(ctx context.Context, sentinel, password, name string) error {
	v, err := sentinelDo(ctx, sentinel, password, "RESET", name)
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n == 0 {
		return fmt.Errorf("sentinel %s: no master named %q", sentinel, name)
	}
	return nil
}

// Peer is a replica or a sentinel as a sentinel records it.
type Peer struct {
	Addr  string   // ip:port
	Flags []string // e.g. slave, sentinel, s_down, o_down, disconnected
	// LinkStatus is a replica's master-link-status (ok, err); "" for a
	// sentinel.
	LinkStatus string
}

// Down reports whether the sentinel sees the peer as down or disconnected.
func (p Peer) Down() bool {
	return slices.Contains(p.Flags, "s_down") || slices.Contains(p.Flags, "o_down") || slices.Contains(p.Flags, "disconnected")
}

// Peers is what one sentinel knows of a master's other members.
type Peers struct {
	Replicas  []Peer // SENTINEL REPLICAS
	Sentinels []Peer // SENTINEL SENTINELS: the others, not the one asked
}

// Has reports whether addr (ip:port) is among peers and not down.
func Has(peers []Peer, addr string) bool {
	for _, p := range peers {
		if p.Addr == addr && !p.Down() {
			return true
		}
	}
	return false
}

// Known asks one sentinel which replicas and other sentinels of master
// name it knows, so a caller can check that every member rejoined before
// a Reset.
func Known(ctx context.Context, sentinel, password, name string) (Peers, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*SentinelTimeout)
	defer cancel()
	var out Peers
	for _, q := range []struct {
		sub string
		dst *[]Peer
	}{{"REPLICAS", &out.Replicas}, {"SENTINELS", &out.Sentinels}} {
		v, err := sentinelDo(ctx, sentinel, password, q.sub, name)
		if err != nil {
			return Peers{}, err
		}
		if *q.dst, err = parsePeers(v); err != nil {
			return Peers{}, fmt.Errorf("sentinel %s: SENTINEL %s: %w", sentinel, q.sub, err)
		}
	}
	return out, nil
}

// parsePeers reads the answer of SENTINEL REPLICAS or SENTINEL SENTINELS:
// a list of flat field/value lists (RESP2) or maps (RESP3).
func parsePeers(v any) ([]Peer, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected answer %T", v)
	}
	peers := make([]Peer, 0, len(list))
	for i, e := range list {
		fields := map[string]string{}
		switch e := e.(type) {
		case []any:
			if len(e)%2 != 0 {
				return nil, fmt.Errorf("entry %d: odd field list", i)
			}
			for j := 0; j < len(e); j += 2 {
				fields[fmt.Sprint(e[j])] = fmt.Sprint(e[j+1])
			}
		case map[any]any:
			for k, v := range e {
				fields[fmt.Sprint(k)] = fmt.Sprint(v)
			}
		default:
			return nil, fmt.Errorf("entry %d: unexpected %T", i, e)
		}
		ip, port := fields["ip"], fields["port"]
		if _, err := strconv.Atoi(port); ip == "" || err != nil {
			return nil, fmt.Errorf("entry %d: bad address ip=%q port=%q", i, ip, port)
		}
		p := Peer{Addr: net.JoinHostPort(ip, port), LinkStatus: fields["master-link-status"]}
		if f := fields["flags"]; f != "" {
			p.Flags = strings.Split(f, ",")
		}
		peers = append(peers, p)
	}
	return peers, nil
}

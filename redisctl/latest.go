package redisctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MasterView is one sentinel's record of a master: its address, the
// configuration epoch of the failover that made it the master (Sentinel's
// own tie-breaker: a higher epoch is a newer decision), and its flags.
type MasterView struct {
	Addr  string
	Epoch int64
	Flags []string
}

// MasterState asks one sentinel for its record of master name (SENTINEL
// MASTER).
func MasterState(ctx context.Context, sentinel, password, name string) (MasterView, error) {
	v, err := sentinelDo(ctx, sentinel, password, "MASTER", name)
	if err != nil {
		return MasterView{}, err
	}
	f, err := fieldMap(v)
	if err != nil {
		return MasterView{}, fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", sentinel, err)
	}
	return parseMasterView(f)
}

// parseMasterView reads the fields of a SENTINEL MASTER answer.
func parseMasterView(f map[string]string) (MasterView, error) {
	ip, port := f["ip"], f["port"]
	if _, err := strconv.Atoi(port); ip == "" || err != nil {
		return MasterView{}, fmt.Errorf("bad master address ip=%q port=%q", ip, port)
	}
	mv := MasterView{Addr: net.JoinHostPort(ip, port)}
	if e := f["config-epoch"]; e != "" {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			return MasterView{}, fmt.Errorf("bad config-epoch %q", e)
		}
		mv.Epoch = n
	}
	if fl := f["flags"]; fl != "" {
		mv.Flags = strings.Split(fl, ",")
	}
	return mv, nil
}

// fieldMap turns a flat field/value list (RESP2) or a map (RESP3) into a
// map.
func fieldMap(v any) (map[string]string, error) {
	out := map[string]string{}
	switch e := v.(type) {
	case []any:
		if len(e)%2 != 0 {
			return nil, errors.New("odd field list")
		}
		for j := 0; j < len(e); j += 2 {
			out[fmt.Sprint(e[j])] = fmt.Sprint(e[j+1])
		}
	case map[any]any:
		for k, v := range e {
			out[fmt.Sprint(k)] = fmt.Sprint(v)
		}
	default:
		return nil, fmt.Errorf("unexpected answer %T", v)
	}
	return out, nil
}

// Latest is what the sentinels of a master say, resolved the way Sentinel
// converges: the master named at the highest configuration epoch.
type Latest struct {
	Addr  string
	Epoch int64
	// Votes is how many sentinels name Addr at Epoch; Answered how many
	// answered at all.
	Votes, Answered int
	// Views is each answering sentinel's record, by sentinel address.
	Views map[string]MasterView
}

// AskLatest asks every sentinel at once for its record of master name and
// returns the master named at the highest configuration epoch. Unlike a
// plain majority it stays right while the sentinel set changes (a new
// sentinel that could not meet the others still names the old master, at
// an older epoch). It fails only when no sentinel answers.
func AskLatest(ctx context.Context, sentinels []string, password, name string) (Latest, error) {
	views := make([]MasterView, len(sentinels))
	errs := make([]error, len(sentinels))
	var wg sync.WaitGroup
	for i, s := range sentinels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i], errs[i] = MasterState(ctx, s, password, name)
		}()
	}
	wg.Wait()
	got := map[string]MasterView{}
	var failed []string
	for i, s := range sentinels {
		if errs[i] != nil {
			failed = append(failed, errs[i].Error())
			continue
		}
		got[s] = views[i]
	}
	if len(got) == 0 {
		sort.Strings(failed)
		return Latest{}, fmt.Errorf("no sentinel of %s answered: %s", name, strings.Join(failed, "; "))
	}
	l, err := ResolveLatest(got)
	if err != nil {
		return l, fmt.Errorf("sentinels of %s: %w", name, err)
	}
	return l, nil
}

// ResolveLatest picks, from the sentinels' records, the master named at
// the highest configuration epoch (pure). Two masters at the same highest
// epoch is an error (Sentinel never makes two decisions in one epoch).
func ResolveLatest(views map[string]MasterView) (Latest, error) {
	l := Latest{Views: views, Answered: len(views), Epoch: -1}
	for _, v := range views {
		if v.Epoch > l.Epoch {
			l.Epoch = v.Epoch
		}
	}
	votes := map[string]int{}
	for _, v := range views {
		if v.Epoch == l.Epoch {
			votes[v.Addr]++
		}
	}
	if len(votes) > 1 {
		return l, fmt.Errorf("two masters named at epoch %d: %v", l.Epoch, votes)
	}
	for a, n := range votes {
		l.Addr, l.Votes = a, n
	}
	return l, nil
}

// SentinelSettings are the per-master settings cacheplane gives Sentinel
// (agent/render writes the same into sentinel.conf).
type SentinelSettings struct {
	Quorum          int
	DownAfter       time.Duration
	FailoverTimeout time.Duration
	ParallelSyncs   int
}

// Remonitor points one sentinel at primary for master name, afresh:
// SENTINEL REMOVE, MONITOR, then SET of the password and settings. It is
// for a sentinel that cannot learn of a failover by itself (it started
// watching a primary that died before it met the other sentinels, whose
// news reaches it only through that primary): it forgets its replicas and
// peers and rediscovers them from the live primary within seconds.
func Remonitor(ctx context.Context, sentinel, name, primary, password string, s SentinelSettings) error {
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		return fmt.Errorf("remonitor %s on %s: primary %q: %w", name, sentinel, primary, err)
	}
	if _, err := sentinelDo(ctx, sentinel, password, "REMOVE", name); err != nil && !strings.Contains(err.Error(), "No such master") {
		return err
	}
	if _, err := sentinelDo(ctx, sentinel, password, "MONITOR", name, host, port, strconv.Itoa(s.Quorum)); err != nil {
		return err
	}
	_, err = sentinelDo(ctx, sentinel, password, "SET", name, "auth-user", FleetUser, "auth-pass", password,
		"down-after-milliseconds", strconv.FormatInt(s.DownAfter.Milliseconds(), 10),
		"failover-timeout", strconv.FormatInt(s.FailoverTimeout.Milliseconds(), 10),
		"parallel-syncs", strconv.Itoa(s.ParallelSyncs))
	if err != nil {
		// The error text carries the arguments' names only (sentinelDo
		// names the subcommand), never the password.
		return err
	}
	return nil
}

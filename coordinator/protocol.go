package coordinator

// Mixed releases: each member's protocol level is recorded with its
// coordinator record (the leader asks every member of the Raft
// configuration), and the leader proposes a command only once every member
// applies it. See DESIGN.md, "Command versions".

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Release names this build in the coordinator records and the operator's
// messages: set with -ldflags "-X
// github.com/cacheplane/cacheplane/coordinator.Release=<version>"; when
// empty, the VCS revision Go stamped into the binary.
var Release = ""

var buildRevision = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
})

// ReleaseName is Release, or the build's VCS revision.
func ReleaseName() string {
	if Release != "" {
		return Release
	}
	return buildRevision()
}

// ErrMixedReleases: a command is refused because a member of the cluster
// runs a release that cannot apply it. Answered 409.
var ErrMixedReleases = fmt.Errorf("%w: the cluster runs mixed releases", api.ErrConflict)

// MixedReleasesError names the members behind and what they lack.
type MixedReleasesError struct {
	Command CommandType
	Needs   int
	// Behind are the members below Needs (Protocol set, Release when known).
	Behind []api.CoordinatorMember
	// older: members that answered as a release without levels (404).
	older map[string]bool
}

func (e *MixedReleasesError) Error() string {
	feature := protocolFeature[e.Needs]
	if feature == "" {
		feature = e.Command.String()
	}
	parts := make([]string, len(e.Behind))
	for i, m := range e.Behind {
		switch {
		case m.Release != "":
			parts[i] = fmt.Sprintf("%s runs cacheplane %s (protocol %d)", m.ID, m.Release, m.Protocol)
		case e.older[m.ID]:
			parts[i] = fmt.Sprintf("%s runs an older cacheplane release (protocol %d)", m.ID, m.Protocol)
		default:
			parts[i] = fmt.Sprintf("%s has no release recorded yet (protocol %d assumed)", m.ID, m.Protocol)
		}
	}
	target := "this release (cacheplane " + ReleaseName() + ")"
	if ReleaseName() == "dev" {
		target = "this release"
	}
	return fmt.Sprintf("%s: %s need protocol %d on every coordinator: %s; upgrade every coordinator to %s or later first, one at a time (docs/install.md, \"Upgrading cacheplane\"), then retry",
		ErrMixedReleases.Error(), feature, e.Needs, strings.Join(parts, ", "), target)
}

// Unwrap makes errors.Is(err, ErrMixedReleases) and api.ErrConflict hold.
func (e *MixedReleasesError) Unwrap() error { return ErrMixedReleases }

// memberLevels lists the members of the Raft configuration (voters and
// non-voters: both apply the log) with their recorded protocol level:
// this member's own is MaxProtocol; a member without a record (a join in
// progress) or recorded without a level (an older release) is
// ProtocolBase.
func (s *Store) memberLevels() ([]api.CoordinatorMember, error) {
	cf := s.raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	var out []api.CoordinatorMember
	s.fsm.Read(func(st *State, _ uint64) {
		for _, srv := range cf.Configuration().Servers {
			m := memberLevel(st, string(srv.ID), s.cfg.ID)
			if m.ID == s.cfg.ID {
				m.StateKey = s.StateKeyCheck()
			}
			m.RaftAddr, m.Suffrage = string(srv.Address), srv.Suffrage.String()
			out = append(out, m)
		}
	})
	return out, nil
}

// memberLevel is member id's record with its effective level.
func memberLevel(st *State, id, self string) api.CoordinatorMember {
	m, ok := st.Coordinators[id]
	if !ok {
		m = api.CoordinatorMember{ID: id}
	}
	if id == self {
		m.Protocol, m.Release = MaxProtocol, ReleaseName()
	}
	if m.Protocol < ProtocolBase {
		m.Protocol = ProtocolBase
	}
	return m
}

// Supports is nil when every member of the cluster applies commands of
// type t; otherwise a *MixedReleasesError naming the members behind.
func (s *Store) Supports(t CommandType) error {
	need, ok := t.Since()
	if !ok {
		return fmt.Errorf("command type %d is unknown to this coordinator", uint8(t))
	}
	if need <= ProtocolBase {
		return nil // every release applies these
	}
	ms, err := s.memberLevels()
	if err != nil {
		return err
	}
	var behind []api.CoordinatorMember
	for _, m := range ms {
		if m.Protocol < need {
			behind = append(behind, m)
		}
	}
	if len(behind) == 0 {
		return nil
	}
	sort.Slice(behind, func(i, j int) bool { return behind[i].ID < behind[j].ID })
	return &MixedReleasesError{Command: t, Needs: need, Behind: behind}
}

// ClusterProtocol is the lowest level among the members: the commands the
// leader may propose.
func (s *Store) ClusterProtocol() (int, error) {
	ms, err := s.memberLevels()
	if err != nil {
		return 0, err
	}
	lowest := MaxProtocol
	for _, m := range ms {
		lowest = min(lowest, m.Protocol)
	}
	return lowest, nil
}

// protocolAnswer is the peer API's GET /v1/internal/protocol.
type protocolAnswer struct {
	ID       string `json:"id"`
	Protocol int    `json:"protocol"`
	Release  string `json:"release"`
	StateKey string `json:"state_key,omitempty"`
}

const protocolPath = "/v1/internal/protocol"

// handleProtocol answers which release and level this member runs. An
// older release answers 404 (it has no such route): level 1.
func (s *Server) handleProtocol(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, protocolAnswer{ID: s.cfg.ID, Protocol: MaxProtocol, Release: ReleaseName(), StateKey: s.store.StateKeyCheck()})
}

// protocolController is the leader's record of every member's release:
// every period (and at once on taking over) it asks each other member of
// the Raft configuration over the peer API (mutual TLS, its member
// certificate; plain HTTP in a cluster made before identities until it is
// secured: peerplain.go) and records a level or release
// that changed (CmdCoordinatorUpsert). A member that does not answer keeps
// its record. It logs when the cluster's level changes.
type protocolController struct {
	store  *Store
	self   string
	log    *slog.Logger
	every  time.Duration
	client *http.Client

	lastLevel int
}

func (c *protocolController) Name() string { return "protocol" }

func (c *protocolController) Run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	c.lastLevel = 0
	for {
		c.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pass asks every other member once and records what changed.
func (c *protocolController) pass(ctx context.Context) {
	ms, err := c.store.memberLevels()
	if err != nil {
		c.log.Warn("cannot read the members", "err", err)
		return
	}
	var records = map[string]api.CoordinatorMember{}
	c.store.FSM().Read(func(st *State, _ uint64) {
		for _, m := range ms {
			if r, ok := st.Coordinators[m.ID]; ok {
				records[m.ID] = r
			}
		}
	})
	type answer struct {
		rec api.CoordinatorMember
		got protocolAnswer
		err error
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ans []answer
	)
	for _, m := range ms {
		rec, ok := records[m.ID]
		if m.ID == c.self || !ok || rec.HTTPAddr == "" {
			continue // self: recorded on taking over; no record: a join in progress
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.ask(ctx, rec)
			mu.Lock()
			ans = append(ans, answer{rec, got, err})
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(ans, func(i, j int) bool { return ans[i].rec.ID < ans[j].rec.ID })
	for _, a := range ans {
		if a.err != nil {
			c.log.Debug("member did not say its release; its record stays", "member", a.rec.ID, "err", a.err)
			continue
		}
		if a.rec.Protocol == a.got.Protocol && a.rec.Release == a.got.Release && a.rec.StateKey == a.got.StateKey {
			continue
		}
		rec := a.rec
		rec.Protocol, rec.Release, rec.StateKey = a.got.Protocol, a.got.Release, a.got.StateKey
		if _, err := c.store.Apply(ctx, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: rec}); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("cannot record a member's release; will retry", "member", rec.ID, "err", err)
			}
			return
		}
		c.log.Info("coordinator release recorded", "member", rec.ID, "protocol", max(rec.Protocol, ProtocolBase), "release", rec.Release)
	}
	level, err := c.store.ClusterProtocol()
	if err != nil || level == c.lastLevel {
		return
	}
	c.lastLevel = level
	if level < MaxProtocol {
		err := c.store.Supports(firstCommandOf(level + 1))
		c.log.Info("the cluster runs mixed releases: commands above its lowest level wait", "cluster_protocol", level, "own_protocol", MaxProtocol, "why", errString(err))
		return
	}
	c.log.Info("every coordinator runs this protocol level", "cluster_protocol", level)
}

// firstCommandOf is a command of the level (for the operator's message).
func firstCommandOf(level int) CommandType {
	for t := CommandType(1); t < IgnoreUnknownFlag; t++ {
		if since, ok := t.Since(); ok && since == level {
			return t
		}
	}
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return api.Message(err)
}

// ask asks one member its release: an older release answers 404.
func (c *protocolController) ask(ctx context.Context, m api.CoordinatorMember) (protocolAnswer, error) {
	return askProtocol(ctx, c.store, c.client, m)
}

// askProtocol asks member m over the peer API which release and level it
// runs (mutual TLS; plain HTTP while this member is not secured); an older
// release answers 404: level 0 (1), no release.
func askProtocol(ctx context.Context, s *Store, client *http.Client, m api.CoordinatorMember) (protocolAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := s.peerRequest(ctx, http.MethodGet, m.HTTPAddr, protocolPath, nil)
	if err != nil {
		return protocolAnswer{}, fmt.Errorf("ask %s: %w", m.ID, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return protocolAnswer{}, fmt.Errorf("ask %s at %s: %w", m.ID, m.HTTPAddr, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		var body api.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Code != "not_found" {
			return protocolAnswer{}, fmt.Errorf("ask %s at %s: 404 that is not a coordinator's", m.ID, m.HTTPAddr)
		}
		return protocolAnswer{ID: m.ID}, nil // an older release: level 1, no release recorded
	case http.StatusOK:
	default:
		return protocolAnswer{}, fmt.Errorf("ask %s at %s: status %d", m.ID, m.HTTPAddr, resp.StatusCode)
	}
	var got protocolAnswer
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return protocolAnswer{}, fmt.Errorf("ask %s at %s: decode: %w", m.ID, m.HTTPAddr, err)
	}
	if got.ID != m.ID {
		return protocolAnswer{}, fmt.Errorf("ask %s at %s: answered by %s", m.ID, m.HTTPAddr, got.ID)
	}
	return got, nil
}

// gateFeatures refuses, on any member and before forwarding, the routes
// of a protocol level the cluster does not run yet: an older leader would
// answer 404 for a route it does not know, the operator deserves the
// reason. The members behind by their records are asked first (an older
// leader records no level: a member upgraded meanwhile is not behind);
// when none is, the request goes on and the leader's Store.Apply checks
// again.
func gateFeatures(store *Store, next http.Handler) http.Handler {
	client := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, TLSClientConfig: store.holder.ClientConfig(),
		MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := gatedRoute(r.URL.Path); ok {
			if err := store.Supports(t); err != nil {
				if err = store.askBehind(r.Context(), client, err); err != nil {
					writeError(w, err)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// askBehind asks the members a *MixedReleasesError names without a
// recorded release; it returns the error with those still behind (an older
// release's 404, or no answer: as recorded), nil when none is.
func (s *Store) askBehind(ctx context.Context, client *http.Client, err error) error {
	var mixed *MixedReleasesError
	if !errors.As(err, &mixed) {
		return err
	}
	var httpAddr = map[string]string{}
	s.fsm.Read(func(st *State, _ uint64) {
		for _, m := range mixed.Behind {
			httpAddr[m.ID] = st.Coordinators[m.ID].HTTPAddr
		}
	})
	still := make([]api.CoordinatorMember, len(mixed.Behind))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		older = map[string]bool{}
	)
	for i, m := range mixed.Behind {
		still[i] = m
		if m.Release != "" || httpAddr[m.ID] == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.HTTPAddr = httpAddr[m.ID]
			got, err := askProtocol(ctx, s, client, m)
			if err != nil {
				return
			}
			m.Protocol, m.Release = max(got.Protocol, ProtocolBase), got.Release
			still[i] = m
			if got.Protocol == 0 {
				mu.Lock()
				older[m.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out := *mixed
	out.Behind, out.older = nil, older
	for _, m := range still {
		if m.Protocol < mixed.Needs {
			out.Behind = append(out.Behind, m)
		}
	}
	if len(out.Behind) == 0 {
		return nil
	}
	return &out
}

// gatedRoute is a command of the level a route needs, for routes above
// ProtocolBase.
func gatedRoute(path string) (CommandType, bool) {
	switch {
	case path == "/v1/backups" || strings.HasPrefix(path, "/v1/backups/"):
		return CmdBackupCreate, true
	case path == "/v1/agent/jobs":
		return CmdJobReport, true
	}
	return 0, false
}

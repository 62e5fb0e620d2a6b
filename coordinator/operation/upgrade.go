package operation

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/engines"
)

// Engine upgrades. The addon's members are moved to the new version one
// at a time by recording a per-member engine version (api.Member.Engine,
// Version): the member's agent sees a new spec and restarts it on the new
// image with the same data dir (SIGTERM: redis saves on its way out).
//
//   - Starter: save (BGSAVE, waited for), set the version, wait until the
//     node runs it as a master with at least the keys it had, record the
//     addon's version, tell the app, mark running. The downtime is the
//     restart; the wait step says how long it took.
//   - Business, rolling (a replica on the new version syncs from a primary
//     on the old one): each replica first (wait: the new version, a
//     replica in sync), a zero-loss switchover to it, the old primary
//     (now a replica: wait in sync), the sentinels one at a time (wait:
//     the new version, naming the primary, knowing the replicas and the
//     other sentinels), the haproxys one at a time (the standby first,
//     then the entrypoint VIP moves to it, then the old holder), a
//     zero-loss switchover back to the primary's own host, record, tell,
//     mark running. No node that serves writes is ever restarted.
//   - Business, not rolling: save on the primary, stop the replicas (their
//     processes stopped, data kept: a stopped replica cannot be promoted
//     while the primary restarts), restart the primary on the new version
//     (wait: a master with its keys), start the replicas on it (they
//     resync from the primary), then as rolling from the sentinels on.
//
// Every step checks what is observed before it acts, so a step a previous
// leader half did is recognised (a member already set, a switchover that
// happened, a VIP already moved) and never repeated destructively.

// Step names of an engine upgrade. They are recorded in the FSM: never
// rename one. Member steps are a prefix and the member id.
const (
	StepSavePrefix           = "save "
	StepStopPrefix           = "stop "
	StepUpgradePrefix        = "upgrade "
	StepWaitPrefix           = "wait "
	StepSwitchOverPrefix     = "switch over to "
	StepSwitchBackPrefix     = "switch back to "
	StepMoveEntrypointPrefix = "move entrypoint to "
	StepRecordVersion        = "record version"
)

// Upgrade pacing and figures.
const (
	saveEvery = 5 * time.Second
	// saveAttempts: with --may-discard-data, a save that failed this many
	// times is given up (the upgrade goes on); without it, never.
	saveAttempts = 3
	// EntrypointSettle is how long the old VIP holder is left alone after
	// the VIP moved before it restarts: its agent keeps the clients'
	// frontend for 3 s (agent vipReleaseGrace) while the new holder's is
	// enabled, so no connection attempt meets a closed port.
	EntrypointSettle = 5 * time.Second
)

// UpgradeChange describes an upgrade as the app hook tells it.
func UpgradeChange(from, to string) string { return "engine " + from + " -> " + to }

// UpgradeSteps is the step list of an engine upgrade of a: a starter (one
// redis member) or a business addon, rolling or not. The primary is the
// recorded one; haproxys move standby first.
func UpgradeSteps(a api.Addon, rolling bool) []api.Step { return UpgradeStepsOf(a, rolling, true) }

// UpgradeStepsOf is UpgradeSteps with the haproxy members left out when
// restartHAProxy is false: the two versions run the same HAProxy image, and
// an HAProxy's process depends on nothing else of the engine version (its
// agent leaves the version out of its spec), so nothing would change but a
// restart — for a starter, a second break of the URL after its node's.
func UpgradeStepsOf(a api.Addon, rolling, restartHAProxy bool) []api.Step {
	var replicas, sentinelIDs, standby, holder []string
	prim, _ := Primary(a)
	for _, m := range a.Members {
		switch {
		case m.Role == api.RoleRedis && m.ID != prim.ID:
			replicas = append(replicas, m.ID)
		case m.Role == api.RoleSentinel:
			sentinelIDs = append(sentinelIDs, m.ID)
		case m.Role == api.RoleHAProxy && !restartHAProxy:
		case m.Role == api.RoleHAProxy && m.Active:
			holder = append(holder, m.ID)
		case m.Role == api.RoleHAProxy:
			standby = append(standby, m.ID)
		}
	}
	sort.Strings(replicas)
	sort.Strings(sentinelIDs)
	sort.Strings(standby)
	var names []string
	pair := func(id string) { names = append(names, StepUpgradePrefix+id, StepWaitPrefix+id) }
	switch {
	case len(replicas) == 0: // starter
		names = append(names, StepSavePrefix+prim.ID)
		pair(prim.ID)
	case rolling:
		for _, r := range replicas {
			pair(r)
		}
		names = append(names, StepSwitchOverPrefix+replicas[0])
		pair(prim.ID)
	default: // every redis node stops
		names = append(names, StepSavePrefix+prim.ID)
		for _, r := range replicas {
			names = append(names, StepStopPrefix+r)
		}
		pair(prim.ID)
		for _, r := range replicas {
			pair(r)
		}
	}
	for _, s := range sentinelIDs {
		pair(s)
	}
	for _, h := range standby {
		pair(h)
	}
	if len(holder) > 0 && len(standby) > 0 {
		names = append(names, StepMoveEntrypointPrefix+standby[0])
	}
	for _, h := range holder {
		pair(h)
	}
	if len(replicas) > 0 && rolling {
		names = append(names, StepSwitchBackPrefix+prim.ID)
	}
	names = append(names, StepRecordVersion, StepNotifyApp, StepMarkRunning)
	return steps(names...)
}

// Effects of an upgrade.

// SetMemberVersion makes a member run an engine version (its agent
// restarts it on it, data dir kept) and starts it if it was stopped.
// RunningSince is the start time its agent reported for the process it
// ran then, kept on the operation to recognise the restart.
type SetMemberVersion struct {
	MemberID     string
	Engine       api.Engine
	Version      string
	RunningSince time.Time
}

// StopMember stops a member's process (data kept) until a version is set
// for it.
type StopMember struct{ MemberID string }

// SetAddonVersion records the addon's engine version and drops every
// member's own: they all run it now.
type SetAddonVersion struct {
	Engine  api.Engine
	Version string
}

// MoveEntrypoint gives the addon's VIP to another haproxy member.
type MoveEntrypoint struct{ MemberID string }

func (SetMemberVersion) effect() {}
func (StopMember) effect()       {}
func (SetAddonVersion) effect()  {}
func (MoveEntrypoint) effect()   {}

// Actions of an upgrade.

// Save makes the redis at Addr write its RDB snapshot and waits until it
// has (BGSAVE, so its clients are not blocked).
type Save struct{ Addr string }

// CheckUpgraded checks that the member at Addr runs Engine Version and
// serves in its part: a redis member as a master holding at least MinKeys
// keys (when ≥ 0), or as a replica of ReplicaOf in sync that a majority
// of Sentinels (when any) list as a healthy replica they could promote (a
// restarted replica is refused by SENTINEL FAILOVER, NOGOODSLAVE, until
// the sentinels have read its INFO again); a sentinel naming the primary,
// knowing the replicas and its peers (Sentinel).
type CheckUpgraded struct {
	Addr      string
	Role      api.Role
	Engine    api.Engine
	Version   string
	Master    bool
	ReplicaOf string
	MinKeys   int64
	Sentinels []string
	Sentinel  CheckSentinel
}

func (Save) Mutates() bool          { return true }
func (CheckUpgraded) Mutates() bool { return false }

func (a Save) String() string { return "save " + a.Addr }
func (a CheckUpgraded) String() string {
	return fmt.Sprintf("check %s %s runs %s %s", a.Role, a.Addr, a.Engine, a.Version)
}

// UpgradeRequest is what the pre-flight check of an engine upgrade reads.
type UpgradeRequest struct {
	Addon   api.Addon
	Plans   []api.Plan
	Engines []api.EngineVersion
	// To is the catalog key asked for ("valkey-8.0.1").
	To             string
	MayDiscardData bool
	// Active is the addon's active operation when Busy.
	Active api.Operation
	Busy   bool
	// Probed: the primary was asked (INFO); ProbeErr says why it did not
	// answer ("" when it did). The data check waits for the probe (the
	// cheap refusals are decided without talking to redis).
	Probed   bool
	ProbeErr string
}

// UpgradePlan is an accepted upgrade.
type UpgradePlan struct {
	From, To api.EngineVersion
	// Kind is engines.KindMinor, KindMajor or KindSwitch.
	Kind     string
	Rolling  bool
	Business bool
	// Downtime is what the app should expect, in words.
	Downtime string
}

// CheckUpgrade decides whether addon r.Addon may move to engine version
// r.To now. Each refusal is one line for the operator, wrapping an api
// sentinel: an unknown, identical or disallowed version (the rules'
// reason, naming the version allowed next) is invalid; another operation
// of the addon or an addon that is not running is a conflict; an upgrade
// that could lose data is a conflict unless MayDiscardData — the new
// version cannot read the old one's RDB format, or (a starter, or a
// business addon whose nodes all stop) the primary does not answer, so
// SAVE cannot capture its latest writes before it restarts.
func CheckUpgrade(r UpgradeRequest) (UpgradePlan, error) {
	a := r.Addon
	var p UpgradePlan
	from, err := api.ResolveEngine(r.Engines, a.Engine, a.Version)
	if err != nil || from.Engine != a.Engine || from.Version != a.Version {
		return p, fmt.Errorf("%w: addon %s runs %s-%s, which is not in the engine catalog", api.ErrConflict, a.ID, a.Engine, a.Version)
	}
	p.From = from
	if r.To == from.Key() {
		return p, api.Invalidf("addon %s is already on %s; nothing to upgrade (see: cacheplane engines --from %s)", a.ID, r.To, r.To)
	}
	to, found := findEngine(r.Engines, r.To)
	ok, reason, _ := engines.UpgradeAllowed(r.Engines, from.Key(), r.To)
	if !found || !ok {
		return p, api.Invalidf("cannot upgrade addon %s from %s to %s: %s", a.ID, from.Key(), r.To, reason)
	}
	p.To = to
	p.Rolling = engines.Rolling(r.Engines, from.Key(), to.Key())
	for _, path := range engines.Paths(r.Engines) {
		if path.From == from.Key() && path.To == to.Key() {
			p.Kind = path.Kind
		}
	}
	redis := 0
	for _, m := range a.Members {
		if m.Role == api.RoleRedis {
			redis++
		}
	}
	p.Business = redis > 1
	switch {
	case !p.Business:
		p.Downtime = "its node restarts once: a few seconds without service"
	case p.Rolling:
		p.Downtime = "rolling, one node at a time behind the entrypoint: no downtime"
	default:
		p.Downtime = "every redis node stops: the primary restarts on the new version, then the replicas resync from it (downtime while it restarts)"
	}
	switch {
	case r.Busy:
		return p, fmt.Errorf("%w: addon %s has operation %s (%s) in progress; wait for it to finish (cacheplane operations --addon %s) or cancel it (cacheplane operations-cancel %s)",
			api.ErrConflict, a.ID, r.Active.ID, r.Active.Kind, a.ID, r.Active.ID)
	case a.Status != api.AddonRunning:
		return p, fmt.Errorf("%w: addon %s is %s; its engine can be upgraded once it is running", api.ErrConflict, a.ID, a.Status)
	}
	if r.MayDiscardData {
		return p, nil
	}
	if from.RDB > 0 && to.RDB > 0 && to.RDB < from.RDB {
		return p, fmt.Errorf("%w: upgrading addon %s to %s would lose its data: %s reads RDB formats up to %d and %s wrote format %d; nothing was changed (pass --may-discard-data to start empty)",
			api.ErrConflict, a.ID, to.Key(), to.Key(), to.RDB, from.Key(), from.RDB)
	}
	if r.Probed && r.ProbeErr != "" && (!p.Business || !p.Rolling) {
		prim, _ := Primary(a)
		return p, fmt.Errorf("%w: the primary %s of addon %s does not answer (%s), so SAVE cannot capture its latest writes before it restarts on %s and they could be lost; "+
			"nothing was changed: upgrade once it answers, or pass --may-discard-data to accept losing the writes since its last snapshot",
			api.ErrConflict, prim.ID, a.ID, r.ProbeErr, to.Key())
	}
	return p, nil
}

func findEngine(evs []api.EngineVersion, key string) (api.EngineVersion, bool) {
	for _, e := range evs {
		if e.Key() == key {
			return e, true
		}
	}
	return api.EngineVersion{}, false
}

// SwitchingOver says whether op is at a step that may run a planned
// switchover of a's primary (the topology controller then leaves the two
// masters of the switchover alone): a replace's demotion, an upgrade's
// switchovers and its redis member steps (which switch a primary over
// before restarting it).
func SwitchingOver(a api.Addon, op api.Operation) bool {
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		return false
	}
	name := op.Steps[i].Name
	switch op.Kind {
	case api.OpReplaceMember:
		return name == StepDemote
	case api.OpUpgrade:
		if strings.HasPrefix(name, StepSwitchOverPrefix) || strings.HasPrefix(name, StepSwitchBackPrefix) {
			return true
		}
		for _, p := range []string{StepUpgradePrefix, StepStopPrefix} {
			if id, ok := strings.CutPrefix(name, p); ok {
				m, _ := member(a, id)
				return m.Role == api.RoleRedis
			}
		}
	}
	return false
}

// upgrade decides the current step of an engine upgrade.
func upgrade(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	u := op.Upgrade
	switch step.Name {
	case StepRecordVersion:
		var behind []string
		own := false
		for _, m := range v.Addon.Members {
			if m.Role == api.RoleHAProxy && stepIndex(op, StepUpgradePrefix+m.ID) < 0 {
				continue // not upgraded: the same HAProxy image (UpgradeStepsOf)
			}
			if e, ver := v.Addon.MemberEngine(m); e != u.Engine || ver != u.Version || m.Stopped {
				behind = append(behind, m.ID)
			}
			own = own || m.Engine != ""
		}
		switch {
		case len(behind) == 0 && !own && v.Addon.Engine == u.Engine && v.Addon.Version == u.Version:
			return advance(fmt.Sprintf("addon %s is recorded on %s", v.Addon.ID, u.To))
		case len(behind) > 0:
			return fail("cannot record " + u.To + ": " + strings.Join(behind, ", ") + " not set to it")
		}
		return Decision{Kind: Advance, Effect: SetAddonVersion{Engine: u.Engine, Version: u.Version},
			Detail: fmt.Sprintf("addon %s recorded on %s (was %s)", v.Addon.ID, u.To, u.From)}
	case StepNotifyApp:
		return NotifyStep(v, op, step)
	case StepMarkRunning:
		return Decision{Kind: Advance, Status: api.AddonRunning,
			Detail: fmt.Sprintf("%s -> %s done in %s", u.From, u.To, v.Now.Sub(op.CreatedAt).Round(100*time.Millisecond))}
	}
	for _, s := range []struct {
		prefix string
		fn     func(View, api.Operation, api.Step, api.Member) Decision
	}{
		{StepSavePrefix, saveStep}, {StepStopPrefix, stopStep}, {StepUpgradePrefix, setVersionStep}, {StepWaitPrefix, waitStep},
		{StepSwitchOverPrefix, switchToStep}, {StepSwitchBackPrefix, switchToStep}, {StepMoveEntrypointPrefix, moveEntrypointStep},
	} {
		if id, ok := strings.CutPrefix(step.Name, s.prefix); ok {
			m, found := member(v.Addon, id)
			if !found {
				return advance(id + " is no longer a member of the addon")
			}
			return s.fn(v, op, step, m)
		}
	}
	return fail("unknown step " + step.Name)
}

// saveStep: BGSAVE on the primary, waited for, so the restart reads every
// acknowledged write from the snapshot (and redis's own save on SIGTERM
// adds the few after it). With --may-discard-data a node that does not
// serve, or a save that keeps failing, is given up.
func saveStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	o := v.Observed[m.ID]
	if !o.alive() || v.Hosts[m.HostID].State == api.HostDown {
		if op.Upgrade.MayDiscardData {
			return advance(fmt.Sprintf("%s does not serve (%s): not saved; going on, as --may-discard-data allows", m.ID, describe(o)))
		}
		return wait(fmt.Sprintf("waiting for %s to serve, to save its data (now: %s)", m.ID, describe(o)))
	}
	if op.Upgrade.MayDiscardData && step.Attempts >= saveAttempts {
		return advance(fmt.Sprintf("not saved after %d attempts (%s); going on, as --may-discard-data allows", step.Attempts, step.Detail))
	}
	return paced(step, v, Decision{Kind: Run, Action: Save{Addr: addr(v, m)}, Then: Advance, RetryAfter: saveEvery,
		Detail: m.ID + " saved its data (BGSAVE, waited for)"})
}

// stopStep (every node stops): a replica's process is stopped, its data
// kept, so it cannot be promoted while the primary restarts.
func stopStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	if m.Stopped {
		return advance(m.ID + " is stopped")
	}
	if prim, _ := Primary(v.Addon); prim.ID == m.ID {
		return demoteFirst(v, step, m)
	}
	return Decision{Kind: Advance, Effect: StopMember{MemberID: m.ID},
		Detail: m.ID + " stopped (SIGTERM, data kept): it cannot be promoted while the primary restarts"}
}

// setVersionStep records the member's new version (its agent restarts it
// on it) once that is safe: never the primary of a rolling upgrade (a
// switchover first), the primary of a stop-all only once every replica is
// stopped, a replica of a stop-all once the primary runs the new version,
// a sentinel while the others run (a majority stays), a haproxy while the
// other runs and not while it holds the VIP the other could hold.
func setVersionStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	u := op.Upgrade
	a := v.Addon
	if e, ver := a.MemberEngine(m); e == u.Engine && ver == u.Version && !m.Stopped {
		return advance(m.ID + " is already set to " + u.To)
	}
	o := v.Observed[m.ID]
	set := Decision{Kind: Advance, Effect: SetMemberVersion{MemberID: m.ID, Engine: u.Engine, Version: u.Version, RunningSince: o.StartedAt},
		Detail: fmt.Sprintf("%s set to %s: its agent restarts it on it, data dir kept", m.ID, u.To)}
	switch m.Role {
	case api.RoleRedis:
		prim, _ := Primary(a)
		var others []api.Member
		for _, x := range a.Members {
			if x.Role == api.RoleRedis && x.ID != m.ID {
				others = append(others, x)
			}
		}
		switch {
		case len(others) == 0: // starter
		case prim.ID == m.ID && u.Rolling:
			return demoteFirst(v, step, m)
		case prim.ID == m.ID:
			for _, x := range others {
				ox := v.Observed[x.ID]
				if !x.Stopped || (v.Hosts[x.HostID].State != api.HostDown && (!ox.Seen || ox.State != api.MemberStopped)) {
					return wait(fmt.Sprintf("waiting for %s to stop before the primary restarts (now: %s)", x.ID, describe(ox)))
				}
			}
			set.Detail = fmt.Sprintf("%s (the primary; its replicas are stopped) set to %s: it restarts on it with its data", m.ID, u.To)
		default:
			p := v.Observed[prim.ID]
			if pe, pv := a.MemberEngine(prim); !u.Rolling && (pe != u.Engine || pv != u.Version) {
				return wait(fmt.Sprintf("waiting for the primary %s to run %s before %s starts on it", prim.ID, u.To, m.ID))
			}
			if !p.alive() || p.RedisRole != "master" {
				return wait(fmt.Sprintf("waiting for the primary %s to serve before %s restarts and resyncs from it (now: %s)", prim.ID, m.ID, describe(p)))
			}
			if m.Stopped {
				set.Detail = fmt.Sprintf("%s set to %s and started: it resyncs from the primary %s", m.ID, u.To, prim.ID)
			}
		}
	case api.RoleSentinel:
		for _, x := range a.Members {
			if x.Role == api.RoleSentinel && x.ID != m.ID {
				if ox := v.Observed[x.ID]; !ox.Seen || ox.State != api.MemberRunning {
					return wait(fmt.Sprintf("waiting for sentinel %s to run before %s restarts (a majority must stay; now: %s)", x.ID, m.ID, describe(ox)))
				}
			}
		}
	case api.RoleHAProxy:
		var other api.Member
		for _, x := range a.Members {
			if x.Role == api.RoleHAProxy && x.ID != m.ID {
				other = x
			}
		}
		if other.ID != "" {
			if ox := v.Observed[other.ID]; !ox.Seen || ox.State != api.MemberRunning {
				return wait(fmt.Sprintf("waiting for haproxy %s to run before %s restarts (now: %s)", other.ID, m.ID, describe(ox)))
			}
			if m.Active && v.Hosts[other.HostID].State == api.HostReady {
				return wait(fmt.Sprintf("%s holds the entrypoint: waiting for it to move to %s before it restarts", m.ID, other.ID))
			}
		}
		if i := stepIndex(op, step.Name); i > 0 {
			prev := op.Steps[i-1]
			if strings.HasPrefix(prev.Name, StepMoveEntrypointPrefix) && v.Now.Sub(prev.FinishedAt) < EntrypointSettle {
				return wait(fmt.Sprintf("letting the entrypoint settle on %s before %s restarts", strings.TrimPrefix(prev.Name, StepMoveEntrypointPrefix), m.ID))
			}
		}
	}
	return set
}

// waitStep waits until the member runs the new version and serves in its
// part, through a live check; the detail says how long it took since its
// version was set (for the restarted primary: the downtime).
func waitStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	u := op.Upgrade
	a := v.Addon
	o := v.Observed[m.ID]
	set, _ := u.SetOf(m.ID)
	took := ""
	if !set.At.IsZero() {
		took = fmt.Sprintf(", %s after its version was set", v.Now.Sub(set.At).Round(10*time.Millisecond))
	}
	if e, ver := a.MemberEngine(m); e != u.Engine || ver != u.Version || m.Stopped {
		return fail(fmt.Sprintf("%s is not set to %s", m.ID, u.To))
	}
	if v.Hosts[m.HostID].State == api.HostDown {
		return wait(fmt.Sprintf("waiting for %s: host %s is down", m.ID, m.HostID))
	}
	if !o.Seen || o.State != api.MemberRunning {
		return wait(fmt.Sprintf("waiting for %s to run %s (now: %s)", m.ID, u.To, describe(o)))
	}
	chk := CheckUpgraded{Addr: addr(v, m), Role: m.Role, Engine: u.Engine, Version: u.Version, MinKeys: -1}
	switch m.Role {
	case api.RoleRedis:
		prim, _ := Primary(a)
		switch {
		case prim.ID == m.ID:
			chk.Master = true
			what := "as the primary"
			if u.Keys >= 0 && (!u.Rolling || len(redisMembers(a)) == 1) {
				chk.MinKeys = u.Keys
				what = fmt.Sprintf("as the primary with its data (at least the %d keys it had)", u.Keys)
			}
			return Decision{Kind: Run, Action: chk, Then: Advance,
				Detail: fmt.Sprintf("%s runs %s %s%s (the restart's downtime)", m.ID, u.To, what, took)}
		default:
			chk.ReplicaOf = addr(v, prim)
			chk.Sentinels = sentinels(v)
			return Decision{Kind: Run, Action: chk, Then: Advance,
				Detail: fmt.Sprintf("%s runs %s as a replica of %s in sync, known to the sentinels%s", m.ID, u.To, prim.ID, took)}
		}
	case api.RoleSentinel:
		prim, _ := Primary(a)
		var replicas []string
		others := 0
		for _, x := range a.Members {
			switch {
			case x.Role == api.RoleRedis && x.ID != prim.ID && !x.Stopped:
				replicas = append(replicas, addr(v, x))
			case x.Role == api.RoleSentinel && x.ID != m.ID:
				others++
			}
		}
		chk.Sentinel = CheckSentinel{Addr: chk.Addr, Primary: addr(v, prim), Replicas: replicas, Others: others}
		return Decision{Kind: Run, Action: chk, Then: Advance,
			Detail: fmt.Sprintf("%s runs %s, names the primary %s and knows the replicas and the other sentinels%s", m.ID, u.To, prim.ID, took)}
	}
	// A haproxy: its version shows nowhere; its restart does.
	if !set.RunningSince.IsZero() && o.StartedAt.Equal(set.RunningSince) {
		return wait(fmt.Sprintf("waiting for %s to restart on %s", m.ID, u.To))
	}
	return Decision{Kind: Run, Action: PingEntrypoint{Addr: addr(v, m)}, Then: Advance,
		Detail: fmt.Sprintf("%s restarted on %s and routes to the primary%s", m.ID, u.To, took)}
}

// switchToStep moves the primary role to m by a zero-loss switchover
// (over to the upgraded replica, or back to the primary's own host), once
// m is a replica in sync; done when m is recorded and serving as the
// primary.
func switchToStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	prim, _ := Primary(v.Addon)
	if prim.ID == m.ID {
		if o := v.Observed[m.ID]; !o.alive() || o.RedisRole != "master" {
			return wait(fmt.Sprintf("waiting for %s to serve as the primary (now: %s)", m.ID, describe(o)))
		}
		return advance(m.ID + " is the primary, on host " + m.HostID)
	}
	if v.Hosts[prim.HostID].State == api.HostDown {
		return wait(fmt.Sprintf("the primary %s is on a lost host: waiting for a failover", prim.ID))
	}
	if why := notInSync(v, m.ID); why != "" {
		return wait("waiting before switching over to " + m.ID + ": " + why)
	}
	return paced(step, v, Decision{Kind: Run, Action: Switchover{Primary: addr(v, prim), Replica: addr(v, m), Sentinels: sentinels(v)}, Then: Wait,
		RetryAfter: switchoverEvery, Detail: "switched over to " + m.ID + " (zero-loss); waiting for it to be recorded"})
}

// moveEntrypointStep gives the VIP to m (an upgraded haproxy) so the old
// holder restarts without the clients' connections.
func moveEntrypointStep(v View, op api.Operation, step api.Step, m api.Member) Decision {
	vip := false
	for _, x := range v.Addon.Members {
		vip = vip || (x.Role == api.RoleHAProxy && x.Active)
	}
	switch {
	case m.Active:
		return advance(m.ID + " holds the entrypoint")
	case !vip:
		return advance("the entrypoint is no VIP: nothing to move")
	case v.Hosts[m.HostID].State != api.HostReady:
		return wait(fmt.Sprintf("waiting for host %s of %s to be ready before the entrypoint moves to it", m.HostID, m.ID))
	}
	if o := v.Observed[m.ID]; !o.Seen || o.State != api.MemberRunning {
		return wait(fmt.Sprintf("waiting for %s to run before the entrypoint moves to it (now: %s)", m.ID, describe(o)))
	}
	return Decision{Kind: Advance, Effect: MoveEntrypoint{MemberID: m.ID},
		Detail: "the entrypoint VIP moved to " + m.ID + " (upgraded), so the old holder restarts without the clients' connections"}
}

// demoteFirst: m is the primary and must not restart as one: switch over
// to a replica in sync first (zero-loss), then wait for it to be recorded.
func demoteFirst(v View, step api.Step, m api.Member) Decision {
	if v.Hosts[m.HostID].State == api.HostDown {
		return wait(fmt.Sprintf("the primary %s is on a lost host: waiting for a failover", m.ID))
	}
	var whys []string
	for _, x := range redisMembers(v.Addon) {
		if x.ID == m.ID || x.Stopped {
			continue
		}
		why := notInSync(v, x.ID)
		if why == "" {
			return paced(step, v, Decision{Kind: Run, Action: Switchover{Primary: addr(v, m), Replica: addr(v, x), Sentinels: sentinels(v)}, Then: Wait,
				RetryAfter: switchoverEvery, Detail: m.ID + " is the primary: switched over to " + x.ID + " first (zero-loss); waiting for it to be recorded"})
		}
		whys = append(whys, why)
	}
	return wait(fmt.Sprintf("%s is the primary and must not restart as one; no replica to switch over to yet: %s", m.ID, strings.Join(whys, "; ")))
}

func redisMembers(a api.Addon) []api.Member {
	var out []api.Member
	for _, m := range a.Members {
		if m.Role == api.RoleRedis {
			out = append(out, m)
		}
	}
	return out
}

func stepIndex(op api.Operation, name string) int {
	for i, s := range op.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// cancelUpgrade is the cancel account and undo of an upgrade: every
// member keeps the version it runs (the addon stays recorded on the old
// one; an upgrade asked again finishes the move), and a replica a
// stop-all stopped is started again on the version its primary runs.
func cancelUpgrade(v View, op api.Operation, d *Decision, acc string) string {
	d.Status = api.AddonRunning
	if !v.Exists {
		return acc
	}
	a := v.Addon
	prim, _ := Primary(a)
	pe, pv := a.MemberEngine(prim)
	for _, m := range a.Members {
		if m.Stopped {
			d.Effect = SetMemberVersion{MemberID: m.ID, Engine: pe, Version: pv}
			acc += fmt.Sprintf("; %s started again on %s-%s (its primary's version)", m.ID, pe, pv)
			break
		}
	}
	var on []string
	for _, m := range a.Members {
		if e, ver := a.MemberEngine(m); e == op.Upgrade.Engine && ver == op.Upgrade.Version {
			on = append(on, m.ID)
		}
	}
	if len(on) > 0 {
		acc += fmt.Sprintf("; %s run %s, the others %s: upgrade again to finish", strings.Join(on, ", "), op.Upgrade.To, op.Upgrade.From)
	}
	return acc
}

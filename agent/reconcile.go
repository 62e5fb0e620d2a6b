package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// liveTimeout bounds the CONFIG GET/SET exchange of a live settings change.
const liveTimeout = 5 * time.Second

// reconcileLoop converges the host on the assignments whenever they change,
// a member exits, or a previous pass asked to be retried.
func (a *Agent) reconcileLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	defer a.routes.stop() // route.go: the routers (and their subscriptions) end with the loop
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reconcileNow:
		case <-timer.C:
		}
		retry := a.reconcile(ctx)
		a.attachedOnce.Do(func() { close(a.attached) })
		poke(a.heartbeatNow)
		if retry > 0 {
			timer.Reset(retry)
		} else {
			timer.Stop()
		}
	}
}

// reconcile makes one pass: start or update every assigned member, destroy
// every member that is not assigned (container, then member dir and logs).
// It returns how soon to run again (0: only when something changes).
func (a *Agent) reconcile(ctx context.Context) time.Duration {
	a.mu.Lock()
	if !a.have {
		a.mu.Unlock()
		return 0
	}
	assigned := make(map[string]api.Assignment, len(a.assigned))
	for id, as := range a.assigned {
		assigned[id] = as
	}
	a.mu.Unlock()
	a.syncVIPs(ctx, assigned)   // entrypoint VIPs before the haproxys bind them (vip.go)
	a.syncRoutes(ctx, assigned) // the haproxys' routers (route.go): a VIP move reaches the frontends at once

	sts, err := a.rt.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("reconcile: list members", "err", err)
		}
		return reconcileRetry
	}
	sts = withoutScratch(sts) // jobs.go: a drill's server is not a member
	inRuntime := map[string]runtime.Status{}
	for _, st := range sts {
		inRuntime[st.ID] = st
	}
	ids := make([]string, 0, len(assigned))
	for id := range assigned {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var retry time.Duration
	next := func(d time.Duration) {
		if d > 0 && (retry == 0 || d < retry) {
			retry = d
		}
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return 0
		}
		st, ok := inRuntime[id]
		var stp *runtime.Status
		if ok {
			stp = &st
		}
		next(a.ensure(ctx, assigned[id], stp))
	}
	for _, st := range sts {
		if _, ok := assigned[st.ID]; !ok && ctx.Err() == nil {
			if err := a.remove(ctx, st.ID); err != nil {
				a.log.Warn("remove member", "member", st.ID, "err", err)
				next(reconcileRetry)
			}
		}
	}
	// Member dirs left without a container (a crash between Destroy and
	// the dir's removal, or a member that never started).
	entries, err := os.ReadDir(filepath.Join(a.cfg.DataDir, "members"))
	if err != nil {
		a.log.Warn("reconcile: read member dirs", "err", err)
		return retry
	}
	for _, e := range entries {
		_, isAssigned := assigned[e.Name()]
		_, running := inRuntime[e.Name()]
		if !isAssigned && !running && ctx.Err() == nil {
			if err := a.removeFiles(e.Name()); err != nil {
				a.log.Warn("remove member dir", "member", e.Name(), "err", err)
			}
		}
	}
	return retry
}

// ensure converges one assigned member; st is its container (nil: none).
func (a *Agent) ensure(ctx context.Context, as api.Assignment, st *runtime.Status) time.Duration {
	if as.Stopped { // stopped.go: an engine upgrade keeps it down, data kept
		return a.keepStopped(ctx, as, st)
	}
	log := a.log.With("member", as.MemberID, "addon", as.AddonID, "role", as.Role)
	p, planErr := a.planMember(as)
	running := st != nil && st.State == runtime.StateRunning
	if planErr == nil && running && st.SpecHash == p.spec.SpecHash {
		return a.update(ctx, p, st)
	}

	a.mu.Lock()
	f := a.failures[as.MemberID]
	var wait time.Duration
	if f != nil && !f.resolved && f.assignment == hashOf(as) {
		wait = time.Until(f.nextRestart)
	}
	if st != nil && st.State == runtime.StateStopped && (f == nil || f.resolved) {
		// An exit the agent did not see (it was down, or the event is
		// still on its way): report it before restarting.
		a.mu.Unlock()
		lines, _ := a.rt.LastLogLines(as.MemberID, logLines)
		a.mu.Lock()
		a.recordFailureLocked(as, exitReason(st.ExitCode, st.ExitedAt), lines, 0)
		wait = time.Until(a.failures[as.MemberID].nextRestart)
	}
	a.mu.Unlock()
	if planErr == nil { // business redis: restarts only as a replica of Sentinel's primary (safety.go)
		if d, ok := a.gateStart(ctx, &p, st, max(wait, 0)); !ok {
			return d
		}
	}
	if !running && wait > 0 {
		return wait // restart backoff
	}

	fail := func(reason string, withLogs bool) time.Duration {
		var lines []string
		if withLogs {
			lines, _ = a.rt.LastLogLines(as.MemberID, logLines)
		}
		log.Warn("member failed", "reason", reason)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.recordFailureLocked(as, reason, lines, 0)
		poke(a.heartbeatNow)
		return time.Until(a.failures[as.MemberID].nextRestart)
	}
	if planErr != nil {
		return fail("render config: "+planErr.Error(), false)
	}
	a.mu.Lock()
	a.starting[as.MemberID] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.starting, as.MemberID)
		a.mu.Unlock()
	}()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fail(fmt.Sprintf("member dir: %v", err), false)
	}
	if err := a.writeConf(ctx, p, st); err != nil {
		return fail(err.Error(), false)
	}
	if err := writeMemberFiles(p); err != nil { // membertls.go: access and member TLS files, read at start
		return fail(err.Error(), false)
	}
	if err := a.rt.EnsureImage(ctx, p.spec.Image); err != nil {
		return fail(fmt.Sprintf("ensure image: %v", err), false)
	}
	begin := time.Now()
	if running && as.Role == api.RoleHAProxy {
		a.stopProxyForReplace(ctx, as.MemberID) // vip.go: a new haproxy.cfg never waits 10 s
	}
	if err := a.rt.Start(ctx, p.spec); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		return fail(fmt.Sprintf("start: %v", err), true)
	}
	log.Info("member started", "image", p.spec.Image, "spec_hash", p.spec.SpecHash, "took", time.Since(begin))
	// A new process has only its file's credentials: a rotation's other
	// passwords are applied to it at its next update (fleetauth.go), a
	// pass from now.
	a.fleet.forget(as.MemberID)
	if as.Role == api.RoleHAProxy {
		a.routes.pokeMember(as.MemberID) // route.go: a new HAProxy starts with every server ready
	}
	if len(as.OtherPasswords) > 0 || (p.access != nil && !p.access.Public.IsZero()) {
		return reconcileRetry // the next update applies them (fleetauth.go, access.go)
	}
	return 0
}

// writeConf writes the member's config file (0600) when its content
// changed; sentinel.conf only when missing or written for another spec.
func (a *Agent) writeConf(ctx context.Context, p memberPlan, st *runtime.Status) error {
	if !p.writeOnce {
		return writeFileIfChanged(p.confPath, []byte(p.conf))
	}
	hashPath := filepath.Join(p.dir, sentinelHashName)
	old, _ := os.ReadFile(hashPath)
	if _, err := os.Stat(p.confPath); err == nil && string(old) == p.spec.SpecHash {
		return nil // Sentinel's own file: it rewrites it, we never do
	}
	if st != nil && st.State == runtime.StateRunning {
		// Re-created for a new spec: Start stops the old process first,
		// but it must not rewrite the new file on its way out.
		if err := a.rt.Stop(ctx, p.spec.ID, runtime.DefaultReplaceGrace); err != nil {
			return fmt.Errorf("stop sentinel for its new config: %w", err)
		}
	}
	if err := writeFileAtomic(p.confPath, []byte(p.conf)); err != nil {
		return err
	}
	return writeFileAtomic(hashPath, []byte(p.spec.SpecHash))
}

// update adjusts a running member whose spec is unchanged: its config file,
// memory limit and (redis) live settings. It returns a retry delay when
// something could not be applied yet.
func (a *Agent) update(ctx context.Context, p memberPlan, st *runtime.Status) time.Duration {
	if d, done := a.actOnLiveness(ctx, p, st); done { // liveness.go: unresponsive, taken down
		return d
	}
	log := a.log.With("member", p.as.MemberID, "addon", p.as.AddonID)
	var retry time.Duration
	if !p.writeOnce {
		if err := writeFileIfChanged(p.confPath, []byte(p.conf)); err != nil {
			log.Warn("rewrite config", "err", err)
			retry = reconcileRetry
		}
	}
	if err := a.syncAccess(ctx, p); err != nil { // access.go
		log.Warn("certificate or access switches not applied yet", "err", err)
		retry = reconcileRetry
	}
	if err := a.applyFleetAuth(ctx, p); err != nil { // fleetauth.go
		log.Warn("fleet credential not applied yet", "err", err)
		retry = reconcileRetry
	}
	if p.as.Role != api.RoleRedis {
		return retry
	}
	grow := p.spec.MemoryLimitBytes > st.MemoryLimitBytes
	setLimit := func() {
		if st.MemoryLimitBytes == p.spec.MemoryLimitBytes {
			return
		}
		if err := a.rt.UpdateResources(ctx, p.spec.ID, p.spec.MemoryLimitBytes); err != nil {
			log.Warn("memory limit", "err", err)
			retry = reconcileRetry
			return
		}
		log.Info("memory limit changed", "from", st.MemoryLimitBytes, "to", p.spec.MemoryLimitBytes)
	}
	if grow { // room first, then maxmemory
		setLimit()
	}
	if err := a.applyLive(ctx, p); err != nil {
		log.Debug("live settings not applied yet", "err", err)
		retry = reconcileRetry
	}
	if !grow { // maxmemory first, then the smaller limit
		setLimit()
	}
	if d := a.keepIdentity(ctx, p); d > 0 && (retry == 0 || d < retry) { // liveness.go
		retry = d
	}
	return retry
}

// applyLive brings a running redis's settings parameters (persistence,
// cache mode, maxmemory, and the fsync and save rules: redisctl.Config) to
// the assignment with CONFIG SET, reading the current values from the
// process itself (nothing about them is kept on the agent).
func (a *Agent) applyLive(ctx context.Context, p memberPlan) error {
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	c := a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
	cmds, err := redisctl.ApplySettings(ctx, c, p.as.Settings, p.as.PlanMemoryMB)
	if err != nil {
		return err
	}
	if len(cmds) > 0 {
		params := make([]string, len(cmds))
		for i, cmd := range cmds {
			params[i] = cmd[2]
		}
		a.log.Info("settings changed live", "member", p.as.MemberID, "addon", p.as.AddonID, "params", params,
			"persistence", p.as.Settings.Persistence, "cache_mode", p.as.Settings.CacheMode, "plan_memory_mb", p.as.PlanMemoryMB)
	}
	return nil
}

// remove destroys a member that is no longer assigned, then deletes its
// dir (config and data) and logs: this is how a removed addon's data goes.
func (a *Agent) remove(ctx context.Context, id string) error {
	if err := a.rt.Destroy(ctx, id); err != nil {
		return err
	}
	if err := a.removeFiles(id); err != nil {
		return err
	}
	a.log.Info("member removed", "member", id)
	return nil
}

// removeFiles deletes a member's dir and logs and forgets what the agent
// kept about it.
func (a *Agent) removeFiles(id string) error {
	if id == "" || strings.ContainsAny(id, `/\`) || id == "." || id == ".." {
		return fmt.Errorf("refusing to remove member dir %q", id)
	}
	a.probes.close(id)
	a.live.forget(id)
	a.fleet.forget(id)
	a.mu.Lock()
	delete(a.failures, id)
	delete(a.memberStats, id)
	a.mu.Unlock()
	if err := os.RemoveAll(a.memberDir(id)); err != nil {
		return fmt.Errorf("remove member dir: %w", err)
	}
	for _, suffix := range []string{".log", ".log.1"} {
		err := os.Remove(filepath.Join(a.cfg.DataDir, "logs", id+suffix))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove member log: %w", err)
		}
	}
	return nil
}

// writeFileIfChanged writes data to path (0600) unless it holds it already.
func writeFileIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return os.Chmod(path, 0o600)
	}
	return writeFileAtomic(path, data)
}

// writeFileAtomic writes data to path with mode 0600 through a temporary
// file and a rename, so a crash leaves the old or the new file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// scrub replaces the secrets in log lines (redis prints a rejected config
// line, which may be a user line).
func scrub(lines []string, secrets ...api.Secret) []string {
	if len(lines) == 0 {
		return lines
	}
	out := slices.Clone(lines)
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		for i, l := range out {
			out[i] = strings.ReplaceAll(l, s.Reveal(), "<password>")
		}
	}
	return out
}

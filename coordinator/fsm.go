package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// errIDTaken means the leader drew an id already in use; it draws again.
var errIDTaken = fmt.Errorf("%w: id taken", api.ErrConflict)

// FSM applies committed Raft entries to State. Apply is deterministic: it
// reads no clock and no randomness (the leader chose IDs and times before
// proposing). An entry of a type this release does not know (a newer
// release's, without the ignore flag) stops the process with exit status
// ExitNeedsUpgrade and a message saying what to do; one that cannot be
// decoded panics: applying a log this binary does not understand would
// silently fork the state. A business failure (duplicate, unknown addon) is
// returned as the entry's response and changes nothing. State.Version is
// the highest protocol level of the entries applied: a snapshot carries it,
// and an older release refuses to restore a snapshot above its level.
type FSM struct {
	log *slog.Logger

	mu      sync.RWMutex
	state   *State
	index   uint64
	changed chan struct{} // closed and replaced after every applied batch
	// watch wakes the agents' blocking queries host by host (hostindex.go).
	watch *hostWatch
	// decoded is the command the entry being applied decoded into.
	decoded any

	// keys open sealed entries and seal snapshots (statekeys.go); set
	// once, before Raft starts.
	keys StateKeyring
}

// NewFSM returns an empty FSM.
func NewFSM(log *slog.Logger) *FSM {
	return &FSM{log: log, state: newState(), changed: make(chan struct{}), watch: newHostWatch()}
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Apply applies one entry.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies several entries under one lock and one wake-up.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	ch := func() chan struct{} {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				out[i] = f.applyOne(l.Data, l.Index)
			}
			if l.Index > f.index {
				f.index = l.Index
			}
		}
		f.watch.flush(f.index)
		ch := f.changed
		f.changed = make(chan struct{})
		return ch
	}()
	close(ch)
	return out
}

// ExitNeedsUpgrade is the exit status of a coordinator that stopped at a
// log entry its release cannot apply (systemd: RestartPreventExitStatus).
const ExitNeedsUpgrade = 3

// stopUnknown ends the process on an entry this release cannot apply; a
// variable for tests (which panic instead).
var stopUnknown = func(log *slog.Logger, msg string) {
	log.Error(msg)
	fmt.Fprintln(os.Stderr, "cacheplane-coordinator: "+msg)
	os.Exit(ExitNeedsUpgrade)
}

// unknownCommandMessage tells the operator why this member stops and what
// to do.
func unknownCommandMessage(t CommandType, index uint64) string {
	return fmt.Sprintf("cannot apply Raft log entry %d: command type %d is unknown to this coordinator (cacheplane %s, protocol %d, command types 1-%d); "+
		"a newer cacheplane release wrote it. This member stops rather than apply the log differently from the other members. "+
		"Install on this host the release the other coordinators run (cacheplane members --json shows each member's release) and start it again: "+
		"its data directory is kept and it catches up",
		index, uint8(t), ReleaseName(), MaxProtocol, len(commands))
}

func (f *FSM) applyOne(data []byte, index uint64) any {
	if len(data) == 0 {
		panic("fsm: empty log entry")
	}
	t, body := CommandType(data[0]), data[1:]
	since, known := t.Since()
	if !known {
		if t&IgnoreUnknownFlag != 0 {
			f.log.Warn("ignoring unknown optional command", "type", uint8(t), "index", index)
			return nil
		}
		msg := unknownCommandMessage(t, index)
		stopUnknown(f.log, msg)
		panic(msg) // stopUnknown does not return; never apply past the entry
	}
	if t == CmdSealed {
		inner, err := f.keys.open(body)
		if err != nil {
			msg := fmt.Sprintf("cannot apply Raft log entry %d: it is sealed with a state key this coordinator does not hold (%v). "+
				"Every coordinator of a cluster needs the same state_keys_file: copy it (mode 0600) from a member that runs, then start this one again: "+
				"its data directory is kept and it catches up", index, err)
			stopUnknown(f.log, msg)
			panic(msg)
		}
		if len(inner) == 0 || CommandType(inner[0]) == CmdSealed {
			panic(fmt.Sprintf("fsm: sealed entry %d holds no command", index))
		}
		res := f.applyOne(inner, index)
		if _, refused := res.(error); !refused && since > f.state.Version {
			f.state.Version = since
		}
		return res
	}
	f.decoded = nil
	res := f.apply(t, body)
	f.noteHosts(t, f.decoded)
	// A refusal changes nothing, not even the level.
	if _, refused := res.(error); !refused && since > f.state.Version {
		f.state.Version = since
	}
	return res
}

// apply decodes and applies one entry of a known type.
func (f *FSM) apply(t CommandType, body []byte) any {
	decode := func(v any) {
		if err := json.Unmarshal(body, v); err != nil {
			panic(fmt.Sprintf("fsm: cannot decode %s entry: %v", t, err))
		}
		f.decoded = v
	}
	switch t {
	case CmdCoordinatorUpsert:
		var c CoordinatorUpsertCmd
		decode(&c)
		return f.applyCoordinatorUpsert(c)
	case CmdCoordinatorRemove:
		var c CoordinatorRemoveCmd
		decode(&c)
		delete(f.state.Coordinators, c.ID)
		return nil
	case CmdCatalogSet:
		var c CatalogSetCmd
		decode(&c)
		f.state.Plans, f.state.Engines = c.Plans, c.Engines
		return nil
	case CmdHostUpsert:
		var c HostUpsertCmd
		decode(&c)
		f.state.Hosts[c.Host.ID] = c.Host
		return nil
	case CmdAddonCreate:
		var c AddonCreateCmd
		decode(&c)
		return f.applyAddonCreate(c)
	case CmdAddonRemove:
		var c AddonRemoveCmd
		decode(&c)
		return f.applyAddonRemove(c)
	case CmdOperationUpdate:
		var c OperationUpdateCmd
		decode(&c)
		return f.applyOperationUpdate(c)
	case CmdAddonDelete:
		var c AddonDeleteCmd
		decode(&c)
		return f.applyAddonDelete(c)
	case CmdAddonPlaced:
		var c AddonPlacedCmd
		decode(&c)
		return f.applyAddonPlaced(c)
	case CmdAddonSettings:
		var c AddonSettingsCmd
		decode(&c)
		return f.applyAddonSettings(c)
	case CmdPrimaryObserved:
		var c PrimaryObservedCmd
		decode(&c)
		return f.applyPrimaryObserved(c)
	case CmdOperationCreate:
		var c OperationCreateCmd
		decode(&c)
		return f.applyOperationCreate(c)
	case CmdMemberAdded:
		var c MemberAddedCmd
		decode(&c)
		return f.applyMemberAdded(c)
	case CmdMemberRemoved:
		var c MemberRemovedCmd
		decode(&c)
		return f.applyMemberRemoved(c)
	case CmdEntrypointHolder:
		var c EntrypointHolderCmd
		decode(&c)
		return f.applyEntrypointHolder(c)
	case CmdOperationCancel:
		var c OperationCancelCmd
		decode(&c)
		return f.applyOperationCancel(c)
	case CmdAddonPlanChange:
		var c AddonPlanChangeCmd
		decode(&c)
		return f.applyAddonPlanChange(c)
	case CmdAddonUpgrade:
		var c AddonUpgradeCmd
		decode(&c)
		return f.applyAddonUpgrade(c)
	case CmdMemberVersion:
		var c MemberVersionCmd
		decode(&c)
		return f.applyMemberVersion(c)
	case CmdBackupCreate:
		var c BackupCreateCmd
		decode(&c)
		return f.applyBackupCreate(c)
	case CmdBackupUpdate:
		var c BackupUpdateCmd
		decode(&c)
		return f.applyBackupUpdate(c)
	case CmdJobStart:
		var c JobStartCmd
		decode(&c)
		return f.applyJobStart(c)
	case CmdJobReport:
		var c JobReportCmd
		decode(&c)
		return f.applyJobReport(c)
	case CmdBackupsDeleted:
		var c BackupsDeletedCmd
		decode(&c)
		return f.applyBackupsDeleted(c)
	case CmdBackupsForget:
		var c BackupsForgetCmd
		decode(&c)
		return f.applyBackupsForget(c)
	case CmdRestoreCreate:
		var c RestoreCreateCmd
		decode(&c)
		return f.applyRestoreCreate(c)
	case CmdAddonFleetCredential:
		var c AddonFleetCredentialCmd
		decode(&c)
		return f.applyAddonFleetCredential(c)
	case CmdCASet:
		var c CASetCmd
		decode(&c)
		return f.applyCASet(c)
	case CmdTokenCreate:
		var c TokenCreateCmd
		decode(&c)
		return f.applyTokenCreate(c)
	case CmdTokenUse:
		var c TokenUseCmd
		decode(&c)
		return f.applyTokenUse(c)
	case CmdCertRenew:
		var c CertRenewCmd
		decode(&c)
		return f.applyCertRenew(c)
	case CmdHostRemove:
		var c HostRemoveCmd
		decode(&c)
		return f.applyHostRemove(c)
	case CmdPasswordRotate:
		var c PasswordRotateCmd
		decode(&c)
		return f.applyPasswordRotate(c)
	case CmdPasswordRotateStep:
		var c PasswordRotateStepCmd
		decode(&c)
		return f.applyPasswordRotateStep(c)
	case CmdPasswordRotateFinish:
		var c PasswordRotateFinishCmd
		decode(&c)
		return f.applyPasswordRotateFinish(c)
	case CmdAddonCert:
		var c AddonCertCmd
		decode(&c)
		return f.applyAddonCert(c)
	}
	panic(fmt.Sprintf("fsm: command type %d (%s) is in the command table but not applied", uint8(t), t))
}

func (f *FSM) applyCoordinatorUpsert(c CoordinatorUpsertCmd) any {
	if c.Member.ID == "" {
		return api.Invalidf("coordinator id is empty")
	}
	c.Member.Leader = false // derived from Raft at read time, never stored
	f.state.Coordinators[c.Member.ID] = c.Member
	return nil
}

func (f *FSM) applyAddonCreate(c AddonCreateCmd) any {
	a := c.Addon
	if existing, ok := f.state.addonByApp(a.App); ok {
		if a.RequestID != "" && existing.RequestID == a.RequestID {
			return existing // the same request, retried: idempotent
		}
		return fmt.Errorf("%w: app %s already has a redis addon (%s, %s); remove it first or change its plan",
			api.ErrConflict, a.App, existing.ID, existing.Plan)
	}
	if _, ok := f.state.Addons[a.ID]; ok {
		return fmt.Errorf("%w: addon %s", errIDTaken, a.ID)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	f.state.Addons[a.ID] = a
	f.state.byApp[a.App] = a.ID
	f.state.putOp(c.Operation)
	return a
}

func (f *FSM) applyAddonRemove(c AddonRemoveCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok || (c.App != "" && a.App != c.App) {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, c.App, c.AddonID)
	}
	if a.Status == api.AddonRemoving {
		for id := range f.state.byAddon[a.ID] {
			if o := f.state.Operations[id]; f.state.active[id] && o.Kind == api.OpRemove {
				return o // already being removed: idempotent
			}
		}
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation id %s is taken", api.ErrConflict, c.Operation.ID)
	}
	// Operations in flight for this addon are superseded by the removal
	// (a backup being taken is recorded as failed).
	var inFlight []string // collected first: putOp prunes the addon's index
	for id := range f.state.byAddon[a.ID] {
		if f.state.active[id] {
			inFlight = append(inFlight, id)
		}
	}
	for _, id := range inFlight {
		o := f.state.Operations[id]
		o.State = api.OpFailed
		o.Error = "superseded by removal " + c.Operation.ID
		o.UpdatedAt = c.At
		f.state.putOp(o)
		if b, ok := f.state.Backups[o.BackupID]; ok && o.Kind == api.OpBackup && b.Status == api.BackupRunning {
			b.Status, b.Reason, b.FinishedAt = api.BackupError, "the addon is being removed", c.At
			f.state.Backups[b.ID] = b
		}
	}
	a.Status = api.AddonRemoving
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return c.Operation
}

func (f *FSM) applyOperationUpdate(c OperationUpdateCmd) any {
	old, ok := f.state.Operations[c.Operation.ID]
	if !ok {
		return fmt.Errorf("%w: operation %s", api.ErrNotFound, c.Operation.ID)
	}
	if old.State.Finished() {
		return fmt.Errorf("%w: operation %s is already %s", api.ErrConflict, old.ID, old.State)
	}
	// A cancel request stays, whatever the update was computed from.
	c.Operation.CancelRequested = c.Operation.CancelRequested || old.CancelRequested
	f.state.putOp(c.Operation)
	if c.AddonStatus != "" {
		if a, ok := f.state.Addons[c.Operation.AddonID]; ok {
			a.Status = c.AddonStatus
			a.UpdatedAt = c.Operation.UpdatedAt
			f.state.Addons[a.ID] = a
		}
	}
	return nil
}

func (f *FSM) applyAddonPlaced(c AddonPlacedCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if a.Status == api.AddonRemoving {
		return fmt.Errorf("%w: addon %s is being removed", api.ErrConflict, c.AddonID)
	}
	if old, ok := f.state.Operations[c.Operation.ID]; !ok || old.State.Finished() {
		return fmt.Errorf("%w: operation %s is not active", api.ErrConflict, c.Operation.ID)
	}
	a.Members = append([]api.Member(nil), c.Members...)
	if a.Entrypoint == "" {
		a.Entrypoint = c.Entrypoint
	}
	a.UpdatedAt = c.Operation.UpdatedAt
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return nil
}

func (f *FSM) applyAddonSettings(c AddonSettingsCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if a.Status != api.AddonRunning {
		return fmt.Errorf("%w: addon %s is %s; settings can be changed once it is running", api.ErrConflict, a.ID, a.Status)
	}
	// A backup leaves the addon running. Only a backup refuses: the release
	// before backups accepted settings during any operation of a running
	// addon, and a mixed cluster must apply this entry alike everywhere.
	if o, busy := f.activeOperation(a.ID); busy && o.Kind == api.OpBackup {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	a.Settings = c.Settings
	a.Status = api.AddonUpdating
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return a
}

func (f *FSM) applyPrimaryObserved(c PrimaryObservedCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	found := false
	members := append([]api.Member(nil), a.Members...)
	for i, m := range members {
		if m.Role != api.RoleRedis {
			continue
		}
		if m.ID == c.PrimaryID {
			found = true
			members[i].RedisRole = "primary"
		} else {
			members[i].RedisRole = "replica"
		}
	}
	if !found {
		return fmt.Errorf("%w: addon %s has no redis member %s", api.ErrNotFound, a.ID, c.PrimaryID)
	}
	a.Members = members
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	return nil
}

func (f *FSM) activeOperation(addonID string) (api.Operation, bool) {
	return f.state.activeOperation(addonID)
}

// activeOperation returns the addon's pending or running operation.
func (s *State) activeOperation(addonID string) (api.Operation, bool) {
	// Through the addon's own operations (byAddon, bounded by the
	// history), not every active one: the topology pass asks for every
	// addon, and thousands of provisions may be active at once.
	for id := range s.byAddon[addonID] {
		if s.active[id] {
			return s.Operations[id], true
		}
	}
	return api.Operation{}, false
}

func (f *FSM) applyOperationCreate(c OperationCreateCmd) any {
	a, ok := f.state.Addons[c.Operation.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.Operation.AddonID)
	}
	if a.Status == api.AddonRemoving {
		return fmt.Errorf("%w: addon %s is being removed", api.ErrConflict, a.ID)
	}
	if o, busy := f.activeOperation(a.ID); busy {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	f.state.putOp(c.Operation)
	return c.Operation
}

// checkStep refuses an entry for an operation that is no longer active.
func (f *FSM) checkStep(op api.Operation) error {
	old, ok := f.state.Operations[op.ID]
	if !ok || old.State.Finished() {
		return fmt.Errorf("%w: operation %s is not active", api.ErrConflict, op.ID)
	}
	return nil
}

// applyOperationCancel marks an operation for cancellation; the engine
// stops it at its next safe point. Removals cannot be cancelled.
func (f *FSM) applyOperationCancel(c OperationCancelCmd) any {
	op, ok := f.state.Operations[c.OperationID]
	if !ok {
		return fmt.Errorf("%w: no operation %s (see: cacheplane operations)", api.ErrNotFound, c.OperationID)
	}
	if err := operation.Cancellable(op); err != nil {
		return err
	}
	op.Steps = append([]api.Step(nil), op.Steps...)
	op.CancelRequested = true
	op.UpdatedAt = c.At
	f.state.putOp(op)
	return op
}

// applyAddonPlanChange records the addon's new plan with its plan-change
// operation (the leader checked sizes and room before proposing; these
// are the checks the state alone decides).
func (f *FSM) applyAddonPlanChange(c AddonPlanChangeCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok || (c.App != "" && a.App != c.App) {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, c.App, c.AddonID)
	}
	if o, busy := f.activeOperation(a.ID); busy {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if a.Status != api.AddonRunning {
		return fmt.Errorf("%w: addon %s is %s; its plan can be changed once it is running", api.ErrConflict, a.ID, a.Status)
	}
	if _, ok := api.FindPlan(f.state.Plans, c.Plan); !ok {
		return api.Invalidf("unknown plan %q", c.Plan)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	a.Plan = c.Plan
	a.Status = api.AddonUpdating
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return a
}

func (f *FSM) applyMemberAdded(c MemberAddedCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	for _, m := range a.Members {
		if m.ID == c.Member.ID {
			return fmt.Errorf("%w: member %s exists", api.ErrConflict, m.ID)
		}
	}
	a.Members = append(append([]api.Member(nil), a.Members...), c.Member)
	a.UpdatedAt = c.Operation.UpdatedAt
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return nil
}

func (f *FSM) applyMemberRemoved(c MemberRemovedCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	var kept []api.Member
	for _, m := range a.Members {
		if m.ID == c.MemberID {
			if m.Role == api.RoleRedis && m.RedisRole == "primary" {
				return fmt.Errorf("%w: member %s is the primary; fail over first", api.ErrConflict, m.ID)
			}
			continue
		}
		kept = append(kept, m)
	}
	a.Members = kept
	a.UpdatedAt = c.Operation.UpdatedAt
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return nil
}

func (f *FSM) applyEntrypointHolder(c EntrypointHolderCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	found := false
	members := append([]api.Member(nil), a.Members...)
	for i, m := range members {
		if m.Role != api.RoleHAProxy {
			continue
		}
		members[i].Active = m.ID == c.MemberID
		found = found || m.ID == c.MemberID
	}
	if !found {
		return fmt.Errorf("%w: addon %s has no haproxy member %s", api.ErrNotFound, a.ID, c.MemberID)
	}
	a.Members = members
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	return nil
}

func (f *FSM) applyAddonDelete(c AddonDeleteCmd) any {
	if _, ok := f.state.Addons[c.AddonID]; !ok {
		return nil // already gone: idempotent
	}
	delete(f.state.byApp, f.state.Addons[c.AddonID].App)
	delete(f.state.Addons, c.AddonID)
	for id, b := range f.state.Backups {
		if b.AddonID == c.AddonID {
			delete(f.state.Backups, id)
		}
	}
	f.state.pruneHistory(c.AddonID)
	return nil
}

// Snapshot captures the state; Persist writes it beside Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	// Raft calls Snapshot between two Applies and Persist beside them:
	// only the maps are copied here (the values are never changed in
	// place, only replaced), the JSON encoding runs in Persist.
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.shallowCopy(), index: f.index, keys: f.keys, sealed: f.state.sealable(f.keys)}, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: read: %w", err)
	}
	if rest, sealed := bytes.CutPrefix(data, []byte(sealedSnapshotMagic)); sealed {
		if data, err = f.keys.open(rest); err != nil {
			return fmt.Errorf("restore snapshot: it is sealed with a state key this coordinator does not hold (%w): "+
				"every coordinator of a cluster needs the same state_keys_file; copy it (mode 0600) from a member that runs", err)
		}
	}
	s := newState()
	w := snapshotState{State: s}
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if s.Version > MaxProtocol {
		return fmt.Errorf("restore snapshot: it holds state of protocol %d, newer than this coordinator's (cacheplane %s, protocol %d): "+
			"install on this host the release the other coordinators run", s.Version, ReleaseName(), MaxProtocol)
	}
	// Snapshots written before the level was tracked: their content says.
	if len(s.Backups) > 0 || len(s.Jobs) > 0 || len(s.BackupSeqs) > 0 {
		s.Version = max(s.Version, ProtocolBackups)
	}
	s.Version = max(s.Version, ProtocolBase)
	fill := newState()
	s.byApp, s.active = fill.byApp, fill.active
	if s.Coordinators == nil {
		s.Coordinators = fill.Coordinators
	}
	if s.Hosts == nil {
		s.Hosts = fill.Hosts
	}
	if s.Addons == nil {
		s.Addons = fill.Addons
	}
	if s.Operations == nil {
		s.Operations = fill.Operations
	}
	if s.Backups == nil {
		s.Backups = fill.Backups
	}
	if s.Jobs == nil {
		s.Jobs = fill.Jobs
	}
	if s.BackupSeqs == nil {
		s.BackupSeqs = fill.BackupSeqs
	}
	if s.JoinTokens == nil {
		s.JoinTokens = fill.JoinTokens
	}
	if s.HostCerts == nil {
		s.HostCerts = fill.HostCerts
	}
	s.reindex()
	f.mu.Lock()
	f.state = s
	// Every host's assignments may have changed. A snapshot written
	// before it carried its index (AppliedIndex 0) counts as of the
	// index this member had applied.
	f.index = max(f.index, w.AppliedIndex)
	f.watch.pendingAll = true
	f.watch.flush(f.index)
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return nil
}

// snapshotState is a snapshot's JSON: the state and the index of the last
// entry applied into it (releases before it ignore the field).
type snapshotState struct {
	*State
	AppliedIndex uint64 `json:"applied_index,omitempty"`
}

type fsmSnapshot struct {
	state  *State
	index  uint64
	keys   StateKeyring
	sealed bool
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	data, err := json.Marshal(snapshotState{State: s.state, AppliedIndex: s.index})
	if err == nil && s.sealed {
		var blob []byte
		if blob, err = s.keys.seal(data); err == nil {
			data = append([]byte(sealedSnapshotMagic), blob...)
		}
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("snapshot state: %w", err)
	}
	if _, err := sink.Write(data); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Read runs fn with the state under the read lock. fn must not keep
// references to maps or slices of the state.
func (f *FSM) Read(fn func(s *State, index uint64)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state, f.index)
}

// Index is the last applied log index.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Changed returns a channel closed at the next change after the caller's read.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// applyAddonFleetCredential fills a missing fleet credential; one already
// there is kept (see AddonFleetCredentialCmd).
func (f *FSM) applyAddonFleetCredential(c AddonFleetCredentialCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if c.FleetPassword.IsZero() {
		return fmt.Errorf("%w: addon %s: empty fleet credential", api.ErrInvalid, c.AddonID)
	}
	if !a.FleetPassword.IsZero() {
		return nil
	}
	a.FleetPassword = c.FleetPassword
	f.state.Addons[a.ID] = a
	return nil
}

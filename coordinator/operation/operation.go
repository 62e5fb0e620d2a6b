package operation

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// View is what a decision may read about one addon and the fleet: copies,
// never shared with the FSM.
type View struct {
	Addon  api.Addon
	Exists bool // false once the addon is forgotten
	Plan   api.Plan
	// PlanKnown is false when the addon's plan is not in the catalog.
	PlanKnown bool
	Hosts     map[string]api.Host
	// Observed is the latest agent report of each member, by member id.
	Observed map[string]Observed
	// HostSeen is each host's last heartbeat since this leader took over.
	HostSeen map[string]time.Time
	// Fleet is the scheduler's view, for placements.
	Fleet scheduler.State
	// VIPPool is the CIDR business entrypoints come from ("" = none), and
	// UsedEntrypoints the entrypoints of every addon.
	VIPPool         string
	UsedEntrypoints []string
	Now             time.Time
	// AppHook is the fleet's app hook (NotifyStep).
	AppHook AppHook
	// Backup is the record a backup or restore operation works on
	// (BackupKnown false when there is none), Job the operation's job
	// (JobKnown false before it is listed), BackupLimits their figures.
	Backup       api.Backup
	BackupKnown  bool
	Job          Job
	JobKnown     bool
	BackupLimits BackupLimits
}

// Observed is one member as its agent last reported it.
type Observed struct {
	Seen      bool
	State     string // api.Member* states
	Detail    string
	RedisRole string // master or slave, for redis members that answer
	Offset    int64  // replication offset, for redis members that answer
	// StartedAt is when the member's running process started, as its
	// agent reports it (zero when none runs).
	StartedAt time.Time
}

// alive: the member serves, or is busy but alive.
func (o Observed) alive() bool {
	return o.Seen && (o.State == api.MemberRunning || o.State == api.MemberBusy)
}

// Kind is what a decision asks of the engine.
type Kind int

// Decision kinds.
const (
	// Advance: the current step is done; record Detail, commit Effect and
	// Status with it.
	Advance Kind = iota
	// Wait: the step cannot finish yet; Detail says why.
	Wait
	// Run: perform Action. On success the step advances (Then == Advance)
	// or keeps waiting for its effect to be observed (Then == Wait), with
	// Detail; on error it waits with the error and is retried after
	// RetryAfter.
	Run
	// Fail: the operation cannot succeed; Detail says why. Status, when
	// set, is the addon's new status.
	Fail
	// Cancel: an operator cancelled; the operation stops here. Detail is
	// the account of what was done and what was not; Effect undoes a
	// half-done move.
	Cancel
)

func (k Kind) String() string {
	return [...]string{"advance", "wait", "run", "fail", "cancel"}[k]
}

// Decision is what to do next for one operation.
type Decision struct {
	Kind   Kind
	Detail string
	Effect Effect
	Status api.AddonStatus
	Action Action
	// Then is what a successful Action leads to (Advance or Wait).
	Then Kind
	// RetryAfter is the least time between two runs of a mutating action.
	RetryAfter time.Duration
}

// Effect is a state change committed together with a step.
type Effect interface{ effect() }

// PlaceMembers records where an addon's members run and its entrypoint.
type PlaceMembers struct {
	Members    []api.Member
	Entrypoint string
}

// AddMember adds a member (a replacement) to the addon; it becomes the
// operation's Replacement.
type AddMember struct{ Member api.Member }

// RemoveMember drops a member: it leaves its agent's assignments.
type RemoveMember struct{ MemberID string }

// DeleteAddon forgets the addon (its members are gone).
type DeleteAddon struct{}

func (PlaceMembers) effect() {}
func (AddMember) effect()    {}
func (RemoveMember) effect() {}
func (DeleteAddon) effect()  {}

// Action is I/O the engine performs for a step. Addresses are host:port;
// the engine supplies the addon's password.
type Action interface {
	// Mutates is true for actions that change the world (recorded as
	// attempts, paced by RetryAfter); checks are repeated freely.
	Mutates() bool
	String() string
}

// PingEntrypoint checks that the entrypoint answers PING with the password.
type PingEntrypoint struct{ Addr string }

// CheckSettings checks that the server behind Addr runs with Settings.
type CheckSettings struct {
	Addr     string
	Settings api.Settings
	PlanMB   int
}

// Switchover moves the primary role from the live Primary to Replica
// without losing an acknowledged write.
type Switchover struct {
	Primary, Replica string
	Sentinels        []string
}

// CheckSentinel checks that the sentinel at Addr names Primary and knows
// every replica in Replicas and at least Others other sentinels: a new
// sentinel counts only once it could run a failover.
type CheckSentinel struct {
	Addr, Primary string
	Replicas      []string
	Others        int
}

// Failover asks the sentinels to promote the replica of a primary that is
// certainly gone (its host is lost).
type Failover struct{ Sentinels []string }

// ResetSentinels makes the sentinels forget members that are gone, one
// sentinel at a time: each is reset, then must know every replica in
// Replicas and the other sentinels again before the next one is, so a
// majority always knows the replica a failover needs (a reset sentinel
// rediscovers replicas from the primary and sentinels from their hello
// messages within seconds; a primary lost in that window would otherwise
// leave no sentinel able to promote: NOGOODSLAVE).
type ResetSentinels struct {
	// Sentinels are the addon's sentinels on live hosts: each must know
	// the others again after its reset.
	Sentinels []string
	// Members are all the addon's sentinels: one that knows no sentinel
	// outside them has nothing to forget and is not reset.
	Members  []string
	Replicas []string
}

func (PingEntrypoint) Mutates() bool { return false }
func (CheckSettings) Mutates() bool  { return false }
func (CheckSentinel) Mutates() bool  { return false }
func (Switchover) Mutates() bool     { return true }
func (Failover) Mutates() bool       { return true }
func (ResetSentinels) Mutates() bool { return true }

func (a PingEntrypoint) String() string { return "ping " + a.Addr }
func (a CheckSettings) String() string  { return "check settings on " + a.Addr }
func (a CheckSentinel) String() string  { return "check sentinel " + a.Addr }
func (a Switchover) String() string     { return "switchover " + a.Primary + " -> " + a.Replica }
func (a Failover) String() string       { return "sentinel failover" }
func (a ResetSentinels) String() string { return "sentinel reset" }

// Limits are the engine's figures.
type Limits struct {
	// StuckAfter: a step waiting longer than this marks its operation
	// stuck (shown in operations, counted by a metric); it keeps trying.
	StuckAfter time.Duration
	// StuckAttempts: a mutating action failing this many times in a row
	// marks the operation stuck as well.
	StuckAttempts int
}

// DefaultLimits are the engine's production figures.
func DefaultLimits() Limits { return Limits{StuckAfter: 5 * time.Minute, StuckAttempts: 5} }

// Next decides what to do for op, whose addon is v.Addon. The operation is
// active (pending or running).
func Next(v View, op api.Operation) Decision {
	if op.CancelRequested {
		return cancel(v, op)
	}
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		return Decision{Kind: Advance, Detail: "all steps done"}
	}
	step := op.Steps[i]
	switch op.Kind {
	case api.OpProvision:
		return provision(v, op, step)
	case api.OpRemove:
		return remove(v, op, step)
	case api.OpSettingsChange:
		return settings(v, step)
	case api.OpReplaceMember:
		return replace(v, op, step)
	case api.OpPlanChange:
		return planChange(v, op, step)
	case api.OpUpgrade:
		return upgrade(v, op, step)
	case api.OpBackup:
		return backupOp(v, op, step)
	case api.OpRestore:
		return restoreOp(v, op, step)
	case api.OpRotatePassword:
		return rotate(v, op, step)
	}
	return Decision{Kind: Fail, Detail: fmt.Sprintf("this coordinator cannot run %s operations", op.Kind)}
}

// Stuck says why op is stuck at now ("" when it is not): its current step
// has waited longer than l.StuckAfter, or its action failed
// l.StuckAttempts times in a row.
func Stuck(op api.Operation, now time.Time, l Limits) string {
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		return ""
	}
	s := op.Steps[i]
	if jobStep(op, s.Name) {
		return "" // bounded by the job timeout: it fails on its own
	}
	if op.Kind == api.OpRotatePassword && s.Name == StepGrace {
		return "" // waits as long as the operator asked
	}
	switch {
	case l.StuckAttempts > 0 && s.Attempts >= l.StuckAttempts && strings.Contains(s.Detail, "failed"):
		return fmt.Sprintf("step %q failed %d times: %s", s.Name, s.Attempts, s.Detail)
	case l.StuckAfter > 0 && !s.StartedAt.IsZero() && now.Sub(s.StartedAt) >= l.StuckAfter:
		return fmt.Sprintf("step %q has waited %s: %s", s.Name, now.Sub(s.StartedAt).Round(time.Second), s.Detail)
	}
	return ""
}

// Cancellable says whether an operator may cancel op, and why not.
func Cancellable(op api.Operation) error {
	switch {
	case op.State.Finished():
		return fmt.Errorf("%w: operation %s is already %s", api.ErrConflict, op.ID, op.State)
	case op.Kind == api.OpRemove:
		return fmt.Errorf("%w: operation %s removes addon %s; a removal cannot be cancelled (its members may already be gone)", api.ErrConflict, op.ID, op.AddonID)
	case op.Kind == api.OpRotatePassword && rotatePublished(op):
		return fmt.Errorf("%w: operation %s has published addon %s's new password; end it with: cacheplane addons-password-rotate --app %s --finish (the old password is then removed)", api.ErrConflict, op.ID, op.AddonID, op.App)
	case op.Kind == api.OpRestore:
		return fmt.Errorf("%w: operation %s restores backup %s into addon %s; a restore cannot be cancelled (the data is being replaced): it ends on its own, at the latest after the job timeout", api.ErrConflict, op.ID, op.BackupID, op.AddonID)
	}
	return nil
}

// cancel stops op at this safe point (the engine only asks between
// actions) with an account of its steps and, for a replace whose
// replacement was placed but whose old member is still there, the removal
// of the replacement, so the addon is left as it was before.
func cancel(v View, op api.Operation) Decision {
	var done, notDone []string
	for _, s := range op.Steps {
		if s.State == api.OpDone {
			done = append(done, s.Name)
		} else {
			notDone = append(notDone, s.Name)
		}
	}
	acc := "cancelled by an operator"
	if len(done) > 0 {
		acc += "; done: " + strings.Join(done, ", ")
	}
	if len(notDone) > 0 {
		acc += "; not done: " + strings.Join(notDone, ", ")
	}
	d := Decision{Kind: Cancel}
	switch op.Kind {
	case api.OpReplaceMember:
		_, hasOld := member(v.Addon, op.Target)
		_, hasNew := member(v.Addon, op.Replacement)
		prim, _ := Primary(v.Addon)
		switch {
		case !v.Exists || op.Replacement == "" || !hasOld || !hasNew:
		case prim.ID == op.Replacement:
			// A failover made the replacement the primary: it holds the
			// live data, never remove it.
			acc += "; replacement " + op.Replacement + " is the primary now: both it and " + op.Target + " stay"
		default:
			d.Effect = RemoveMember{MemberID: op.Replacement}
			acc += "; replacement " + op.Replacement + " removed again, " + op.Target + " stays"
		}
	case api.OpProvision:
		d.Status = api.AddonError
		acc += "; the addon is left in error: remove it, or add it again"
	case api.OpSettingsChange:
		d.Status = api.AddonRunning
		acc += "; the new settings stay recorded and the agents keep applying them"
	case api.OpPlanChange:
		d.Status = api.AddonRunning
		acc += "; the new plan stays recorded and the agents keep resizing to it (to go back, change the plan again)"
	case api.OpUpgrade:
		acc = cancelUpgrade(v, op, &d, acc)
	case api.OpRotatePassword:
		if v.Exists && !v.Addon.NextPassword.IsZero() {
			d.Effect = RotateEffect{Change: RotateAbort}
			acc += "; the next password is dropped, the URL's stays"
		}
	case api.OpBackup:
		if v.BackupKnown && v.Backup.Status == api.BackupRunning {
			d.Effect = UpdateBackup{Backup: failedBackup(v, v.Backup, "cancelled by an operator")}
			acc += "; backup " + v.Backup.ID + " is recorded as failed"
		}
	}
	d.Detail = acc
	return d
}

// member finds a member of a by id.
func member(a api.Addon, id string) (api.Member, bool) {
	if id == "" {
		return api.Member{}, false
	}
	for _, m := range a.Members {
		if m.ID == id {
			return m, true
		}
	}
	return api.Member{}, false
}

// Primary is the addon's recorded primary redis member (its first redis
// member while none is recorded). The coordinator uses it too.
func Primary(a api.Addon) (api.Member, bool) {
	for _, m := range a.Members {
		if m.Role == api.RoleRedis && m.RedisRole == "primary" {
			return m, true
		}
	}
	for _, m := range a.Members {
		if m.Role == api.RoleRedis {
			return m, true
		}
	}
	return api.Member{}, false
}

// addr is a member's host:port.
func addr(v View, m api.Member) string {
	host := m.Address
	if host == "" {
		host = v.Hosts[m.HostID].Address
	}
	return net.JoinHostPort(host, strconv.Itoa(m.Port))
}

// sentinels lists the addon's sentinel addresses, but for excluded members.
func sentinels(v View, exclude ...string) []string {
	var out []string
	for _, m := range v.Addon.Members {
		if m.Role != api.RoleSentinel || contains(exclude, m.ID) {
			continue
		}
		out = append(out, addr(v, m))
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// TestPasswordRotateCommands: commands 34-36 move the addon's passwords
// through a rotation (next, published with the old one kept, the grace
// period recorded with the addon as the rotation ends, retired by a retire
// operation of its own), refuse a second rotation with a clear 409 (also
// during the grace period), let another operation run during the grace
// period (--finish then ends it, the retire waits for that operation),
// survive a snapshot round trip at each stage, and name no password in a
// refusal.
func TestPasswordRotateCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	create := testAddon("shop", "shop-1", "")
	if res := f.Apply(entry(t, 1, CmdAddonCreate, create)); isErr(res) {
		t.Fatal(res)
	}
	a := f.state.Addons["shop-1"]
	a.Status = api.AddonRunning
	f.state.Addons["shop-1"] = a
	done := create.Operation
	done.State = api.OpDone
	f.state.putOp(done)
	orig := a.Password

	next := api.NewSecret(strings.Repeat("n", 64))
	op := api.Operation{ID: "rot-1", AddonID: "shop-1", App: "shop", Kind: api.OpRotatePassword, State: api.OpRunning,
		Steps: operation.RotateSteps(), Rotate: api.PasswordRotation{Grace: api.Duration(time.Hour)}, CreatedAt: t0, UpdatedAt: t0}
	if res := f.Apply(entry(t, 2, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: next, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.NextPassword.Equal(next) || !a.Password.Equal(orig) || !a.OldPassword.IsZero() {
		t.Fatal("after command 34 the next password is recorded beside the URL's")
	}
	if got := otherPasswords(a); len(got) != 1 || !got[0].Equal(next) {
		t.Fatalf("assignments carry %d other passwords, want the next one", len(got))
	}
	assertRoundTrip(t, f)

	// A second rotation: 409, saying which and how to finish it, no secret.
	op2 := op
	op2.ID = "rot-2"
	res := f.Apply(entry(t, 3, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: api.NewSecret(strings.Repeat("m", 64)), Operation: op2, At: t0}))
	err, _ := res.(error)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "already rotating") || !strings.Contains(err.Error(), "--finish") {
		t.Fatalf("second rotation: %v", res)
	}
	if strings.Contains(err.Error(), next.Reveal()) || strings.Contains(err.Error(), orig.Reveal()) {
		t.Fatal("a refusal names a password")
	}

	op.Steps[1].State, op.Steps[2].State = api.OpDone, api.OpDone
	if res := f.Apply(entry(t, 4, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotatePublish, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	// Retried: changes nothing more.
	if res := f.Apply(entry(t, 5, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotatePublish, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.Password.Equal(next) || !a.OldPassword.Equal(orig) || !a.NextPassword.IsZero() || !a.SpecPassword.Equal(orig) {
		t.Fatal("publish: the next password is the URL's, the old one kept, the spec password the original")
	}
	if !strings.Contains(RedisURL(a), next.Reveal()) {
		t.Fatal("the URL does not carry the new password")
	}
	assertRoundTrip(t, f)

	// The grace period is recorded with the addon and the rotation ends.
	until := t0.Add(time.Hour)
	op.Steps[3].State, op.Steps[4].State, op.State = api.OpDone, api.OpDone, api.OpDone
	for i, u := range []time.Time{until, until.Add(time.Hour)} { // retried with another end: the first stays
		if res := f.Apply(entry(t, uint64(6+i), CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotateGrace, Until: u, Operation: op, At: t0})); isErr(res) && i == 0 {
			t.Fatal(res)
		}
	}
	a = f.state.Addons["shop-1"]
	if !a.OldPasswordUntil.Equal(until) || !a.OldPassword.Equal(orig) || len(otherPasswords(a)) != 1 {
		t.Fatalf("grace: old password accepted until %s, want %s", a.OldPasswordUntil, until)
	}
	if _, busy := f.state.activeOperation("shop-1"); busy {
		t.Fatal("the rotation is still the addon's active operation in its grace period")
	}
	assertRoundTrip(t, f)
	if got := f.state.Addons["shop-1"].OldPasswordUntil; !got.Equal(until) {
		t.Fatalf("grace end after a snapshot round trip %s", got)
	}

	// During the grace period: a second rotation is refused (finish
	// first), another operation starts.
	res = f.Apply(entry(t, 8, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: api.NewSecret(strings.Repeat("m", 64)), Operation: op2, At: t0}))
	if err, _ := res.(error); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "grace period of its previous rotation") || !strings.Contains(err.Error(), "--finish") {
		t.Fatalf("rotation during grace: %v", res)
	}
	other := api.Operation{ID: "set-1", AddonID: "shop-1", App: "shop", Kind: api.OpSettingsChange, State: api.OpRunning, Steps: []api.Step{{Name: "apply"}}, CreatedAt: t0, UpdatedAt: t0}
	if res := f.Apply(entry(t, 9, CmdOperationCreate, OperationCreateCmd{Operation: other})); isErr(res) {
		t.Fatalf("an operation during grace: %v", res)
	}
	// --finish during it (behind the other operation): the grace period
	// ends now, never later than recorded.
	if res := f.Apply(entry(t, 10, CmdPasswordRotateFinish, PasswordRotateFinishCmd{AddonID: "shop-1", At: t0.Add(10 * time.Minute)})); isErr(res) {
		t.Fatal(res)
	}
	if res := f.Apply(entry(t, 11, CmdPasswordRotateFinish, PasswordRotateFinishCmd{AddonID: "shop-1", At: t0.Add(20 * time.Minute)})); isErr(res) {
		t.Fatal(res)
	}
	if got := f.state.Addons["shop-1"].OldPasswordUntil; !got.Equal(t0.Add(10 * time.Minute)) {
		t.Fatalf("finish: grace ends %s", got)
	}
	if r := operation.PlanRetire([]api.Addon{f.state.Addons["shop-1"]}, map[string]api.Operation{"shop-1": other}, t0.Add(time.Hour)); len(r) != 0 {
		t.Fatal("a retire planned beside the other operation")
	}
	other.State = api.OpDone
	if res := f.Apply(entry(t, 12, CmdOperationUpdate, OperationUpdateCmd{Operation: other})); isErr(res) {
		t.Fatal(res)
	}
	// The retire operation: created when due, retires, checks.
	r := operation.PlanRetire([]api.Addon{f.state.Addons["shop-1"]}, nil, t0.Add(10*time.Minute))
	if len(r) != 1 {
		t.Fatalf("retire ops %d", len(r))
	}
	r[0].ID = "ret-1"
	if res := f.Apply(entry(t, 13, CmdOperationCreate, OperationCreateCmd{Operation: r[0]})); isErr(res) {
		t.Fatal(res)
	}
	assertRoundTrip(t, f)
	op = f.state.Operations["ret-1"]
	op.Steps = append([]api.Step(nil), op.Steps...)
	op.Steps[0].State = api.OpDone
	if res := f.Apply(entry(t, 14, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotateRetire, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.OldPassword.IsZero() || !a.OldPasswordUntil.IsZero() || len(otherPasswords(a)) != 0 || !a.SpecPassword.Equal(orig) {
		t.Fatal("retire: only the new password is accepted, the spec password stays")
	}
	op.Steps[1].State, op.State = api.OpDone, api.OpDone
	if res := f.Apply(entry(t, 15, CmdOperationUpdate, OperationUpdateCmd{Operation: op})); isErr(res) {
		t.Fatal(res)
	}
	if res := f.Apply(entry(t, 16, CmdPasswordRotateFinish, PasswordRotateFinishCmd{OperationID: "rot-1", At: t0})); !errors.Is(res.(error), api.ErrConflict) {
		t.Fatalf("finish of a finished rotation: %v", res)
	}
	if res := f.Apply(entry(t, 17, CmdPasswordRotateFinish, PasswordRotateFinishCmd{AddonID: "shop-1", At: t0})); !errors.Is(res.(error), api.ErrConflict) {
		t.Fatalf("finish out of grace: %v", res)
	}
	assertRoundTrip(t, f)
	if f.state.Version != ProtocolBackups {
		t.Fatalf("state version %d", f.state.Version)
	}
	// A later rotation is accepted again; its spec password stays the first.
	op3 := op2
	op3.ID = "rot-3"
	if res := f.Apply(entry(t, 18, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: api.NewSecret(strings.Repeat("m", 64)), Operation: op3, At: t0})); isErr(res) {
		t.Fatal(res)
	}
}

func isErr(res any) bool { _, ok := res.(error); return ok }

// TestPasswordRotationThroughTheAPI: a starter addon (a real redis-server,
// an agent loop applying the assignments' passwords with redisctl.ApplyACL
// as the agent does) rotates its password through the admin API: a second
// rotation is refused 409, the app hook gets the new URL, the operation
// ends with the grace period recorded on the addon, the coordinator
// restarts (a new leader) and the member still accepts both, --finish
// starts a retire operation that removes the old password from the
// member; no log line nor operation holds a password.
func TestPasswordRotationThroughTheAPI(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuf
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.36")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.36")
	cfg.Bootstrap = true
	cfg.AppHookCommand = hookScript(t, dir)
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(&logs, testutil.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Start(cfg, log, testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := admin // the agent routes, through the admin socket (the peer API takes agent certificates only)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.37", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "rot-app", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Addon.ID
	var as, hp api.Assignment
	testutil.WaitFor(t, 10*time.Second, func() error {
		a, err := peer.Assignments(ctx, "h1", 0, 0)
		if err != nil || len(a.Assignments) != 2 {
			return fmt.Errorf("assignments %+v, %v", a, err)
		}
		as, hp = a.Assignments[0], a.Assignments[1]
		return nil
	})
	startRedis(t, as)
	startEntrypoint(t, hp)
	addr := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))

	// The agent: heartbeats, and the app's passwords applied live.
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		applied := ""
		for {
			if a, err := peer.Assignments(agentCtx, "h1", 0, 0); err == nil && len(a.Assignments) == 2 {
				r := a.Assignments[0]
				pws := []string{r.Password.Reveal()}
				for _, p := range r.OtherPasswords {
					pws = append(pws, p.Reveal())
				}
				if key := strings.Join(pws, " "); key != applied {
					if _, err := redisctl.ApplyACL(agentCtx, addr, pws, r.FleetPassword.Reveal()); err == nil {
						applied = key
					}
				}
			}
			_, _ = peer.Heartbeat(agentCtx, api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{
				{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role, State: api.MemberRunning, RedisRole: "master"},
				{MemberID: hp.MemberID, AddonID: hp.AddonID, Role: hp.Role, State: api.MemberRunning}}})
			select {
			case <-agentCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopAgent(); <-agentDone }()
	testutil.WaitFor(t, 20*time.Second, func() error {
		a, err := admin.Addon(ctx, id)
		if err != nil || a.Status != api.AddonRunning {
			return fmt.Errorf("addon %s: %s, %v", id, a.Status, err)
		}
		return nil
	})
	auth := func(pw string) error {
		rc := redis.NewClient(&redis.Options{Addr: addr, Username: "default", Password: pw, MaxRetries: -1, DisableIdentity: true})
		defer rc.Close()
		return rc.Ping(ctx).Err()
	}
	oldPW := as.Password.Reveal()

	for _, tc := range []struct {
		req    api.PasswordRotateRequest
		status int
		want   string
	}{
		{api.PasswordRotateRequest{App: "rot-app", Finish: true}, 409, "is not rotating its password"},
		{api.PasswordRotateRequest{App: "other-app"}, 404, "app other-app has no addon"},
		{api.PasswordRotateRequest{App: "rot-app", Grace: api.Duration(-time.Second)}, 400, "negative"},
	} {
		if _, err := admin.AddonPasswordRotate(ctx, id, tc.req); api.HTTPStatus(err) != tc.status || !strings.Contains(api.Message(err), tc.want) {
			t.Errorf("%+v: %v; want %d saying %q", tc.req, err, tc.status, tc.want)
		}
	}
	rot, err := admin.AddonPasswordRotate(ctx, id, api.PasswordRotateRequest{App: "rot-app", Grace: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddonPasswordRotate(ctx, id, api.PasswordRotateRequest{App: "rot-app"}); api.HTTPStatus(err) != 409 ||
		!strings.Contains(api.Message(err), "already rotating its password (operation "+rot.Operation.ID+")") {
		t.Errorf("a second rotation: %v", err)
	}
	// The rotation ends once the app is told; the grace period is the
	// addon's (its old password accepted until then).
	atGrace := func() api.Operation {
		t.Helper()
		var op api.Operation
		testutil.WaitFor(t, 20*time.Second, func() error {
			op = operationOf(t, admin, rot.Operation.ID)
			a, err := admin.Addon(ctx, id)
			if err != nil || op.State != api.OpDone || a.OldPasswordUntil.IsZero() {
				return fmt.Errorf("rotation %s at %+v, grace until %s, %v", op.State, op.Steps, a.OldPasswordUntil, err)
			}
			return nil
		})
		return op
	}
	op := atGrace()
	wantIn := func(got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Errorf("%q does not say %q", got, want)
		}
	}
	wantIn(op.Steps[4].Detail, "the old password is accepted until ")
	wantIn(op.Steps[1].Detail, "every redis member accepts both passwords")
	env, err := admin.Env(ctx, "rot-app")
	if err != nil {
		t.Fatal(err)
	}
	newURL := env.Vars[0].Value
	u, err := redis.ParseURL(newURL)
	if err != nil || u.Password == oldPW || len(u.Password) != 64 {
		t.Fatalf("env after publish: %v", err)
	}
	newPW := u.Password
	for _, pw := range []string{oldPW, newPW} {
		if err := auth(pw); err != nil {
			t.Errorf("grace period: %v", err)
		}
	}
	hookEnv, err := os.ReadFile(cfg.AppHookCommand[1])
	if err != nil {
		t.Fatal(err)
	}
	wantIn(string(hookEnv), "REDIS_URL="+newURL+"\n")
	wantIn(string(hookEnv), "CACHEPLANE_CHANGE="+operation.RotateChange+"\n")

	// A new leader (the same member, restarted) resumes the rotation.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err = Start(cfg, log, testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	op = atGrace()
	for _, pw := range []string{oldPW, newPW} {
		if err := auth(pw); err != nil {
			t.Errorf("grace period after a restart: %v", err)
		}
	}
	fin, err := admin.AddonPasswordRotate(ctx, id, api.PasswordRotateRequest{App: "rot-app", Finish: true})
	if err != nil || !strings.Contains(fin.Message, "ends now") {
		t.Fatalf("--finish: %+v, %v", fin, err)
	}
	// A retire operation of its own removes the old password.
	var retire api.Operation
	testutil.WaitFor(t, 20*time.Second, func() error {
		ops, err := admin.Operations(ctx, "", id)
		if err != nil {
			return err
		}
		for _, o := range ops {
			if operation.IsRetire(o) {
				retire = o
			}
		}
		if retire.State != api.OpDone {
			return fmt.Errorf("retire %s: %+v", retire.State, retire.Steps)
		}
		return nil
	})
	wantIn(retire.Steps[1].Detail, "the old password is refused by every redis member")
	if a, _ := admin.Addon(ctx, id); !a.OldPasswordUntil.IsZero() {
		t.Errorf("grace end %s after the retire", a.OldPasswordUntil)
	}
	if err := auth(oldPW); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("the old password after --finish: %v", err)
	}
	if err := auth(newPW); err != nil {
		t.Errorf("the new password after --finish: %v", err)
	}
	if a, _ := admin.Addon(ctx, id); a.Status != api.AddonRunning {
		t.Errorf("addon %s after the rotation", a.Status)
	}
	opsJSON, _ := json.Marshal([]api.Operation{op, retire})
	for _, s := range []string{oldPW, newPW, as.FleetPassword.Reveal()} {
		if strings.Contains(logs.String(), s) || strings.Contains(string(opsJSON), s) {
			t.Error("a password reached the log or the operation")
		}
	}
}

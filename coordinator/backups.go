package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/agent/backup"
	"github.com/cacheplane/cacheplane/api"
	bk "github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// Backups, I/O half: the keyring and the store (backupEnv), the jobs
// listed in agents' assignments, the admin routes (list, create,
// download, restore), the agents' job reports, and the leader's backups
// controller (the schedule, retention). The steps are decided in
// operation/backup.go, the schedule and retention in package backup.

// backupEnv is what every part of the coordinator needs of backups: the
// store (opened on first use, so an S3 endpoint down at start does not
// keep the coordinator from starting), the keyring, and their JSON forms
// for the jobs agents run.
type backupEnv struct {
	cfg       backupstore.Config
	keys      backupstore.Keyring
	storeJSON json.RawMessage
	keysJSON  json.RawMessage
	schedule  bk.Schedule
	limits    operation.BackupLimits
	metrics   *backupMetrics

	mu    sync.Mutex
	store backupstore.Store
	// open opens the store (backupstore.Open; tests may replace it).
	open func(backupstore.Config) (backupstore.Store, error)
}

func newBackupEnv(cfg Config, keys backupstore.Keyring, m *backupMetrics) (*backupEnv, error) {
	storeJSON, err := json.Marshal(cfg.BackupStore)
	if err != nil {
		return nil, fmt.Errorf("encode backup_store: %w", err)
	}
	keysJSON, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("encode the backup keyring: %w", err)
	}
	sched := cfg.BackupSchedule.Schedule()
	lim := operation.DefaultBackupLimits()
	lim.JobTimeout = time.Duration(cfg.BackupJobTimeout)
	lim.RetryEvery = sched.RetryEvery
	if lim.RetryEvery == 0 {
		lim.RetryEvery = bk.DefaultRetryEvery
	}
	return &backupEnv{cfg: cfg.BackupStore, keys: keys, storeJSON: storeJSON, keysJSON: keysJSON, schedule: sched,
		limits: lim, metrics: m, open: backupstore.Open}, nil
}

// Store returns the backup store, opening it on first use.
func (b *backupEnv) Store() (backupstore.Store, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.store != nil {
		return b.store, nil
	}
	st, err := b.open(b.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: backup store %s: %v", api.ErrUnreachable, b.cfg, err)
	}
	b.store = st
	return st, nil
}

// LoadBackupKeys reads the keyring at path (backupstore.Keyring as JSON);
// when there is no file, it makes one with a new key (mode 0600, id
// "k<YYYYMMDD>" of now) — atomically, so coordinators starting together
// on a shared file end with the same keys. A file others may read is
// refused. Errors never quote a key.
func LoadBackupKeys(path string, now time.Time) (k backupstore.Keyring, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := createKeyring(path, now); err != nil {
			return k, false, err
		}
		created = true
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return k, false, fmt.Errorf("backup_keys_file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return k, false, fmt.Errorf("backup_keys_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return k, false, fmt.Errorf("backup_keys_file %s is readable by others (mode %04o): it holds the backups' keys; chmod 600 it", path, fi.Mode().Perm())
	}
	if err := json.Unmarshal(data, &k); err != nil {
		return k, false, fmt.Errorf(`backup_keys_file %s is not a keyring ({"current": ID, "keys": {ID: "AGE-SECRET-KEY-1..."}}): %s`, path, jsonProblem(err))
	}
	if err := k.Validate(); err != nil {
		return k, false, fmt.Errorf("backup_keys_file %s: %w", path, err)
	}
	return k, created, nil
}

// jsonProblem describes a JSON decoding error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return "cannot decode it"
}

func createKeyring(path string, now time.Time) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup_keys_file: %w", err)
	}
	key, err := backupstore.GenerateKey()
	if err != nil {
		return err
	}
	id := "k" + now.UTC().Format("20060102")
	data, err := json.MarshalIndent(backupstore.Keyring{Current: id, Keys: map[string]string{id: key}}, "", "  ")
	if err != nil {
		return fmt.Errorf("backup_keys_file: encode: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".backup-keys-*")
	if err != nil {
		return fmt.Errorf("backup_keys_file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(append(data, '\n'))
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("backup_keys_file: write %s: %w", tmp.Name(), err)
		}
	} else {
		tmp.Close()
		return fmt.Errorf("backup_keys_file: %w", err)
	}
	// Link, not rename: a file another coordinator made meanwhile wins.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("backup_keys_file: %w", err)
	}
	return nil
}

// newJobID draws a job id.
func newJobID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("job id: %w", err)
	}
	return "job-" + hex.EncodeToString(b), nil
}

// jobsFor lists the jobs hostID's agent must run: every job not reported
// yet of an active operation. They hold secrets (password, store
// credentials, keys): never log them.
func (b *backupEnv) jobsFor(st *State, hostID string) []api.BackupJob {
	var jobs []operation.Job
	for _, j := range st.Jobs {
		if j.HostID == hostID && j.Report == nil && st.active[j.OperationID] {
			jobs = append(jobs, j)
		}
	}
	sort.Slice(jobs, func(i, k int) bool { return jobs[i].ID < jobs[k].ID })
	var out []api.BackupJob
	for _, j := range jobs {
		a, ok := st.Addons[j.AddonID]
		if !ok {
			continue
		}
		var m api.Member
		for _, x := range a.Members {
			if x.ID == j.MemberID {
				m = x
			}
		}
		if m.ID == "" {
			continue
		}
		plan, _ := api.FindPlan(st.Plans, a.Plan)
		engine, version := a.MemberEngine(m)
		ev, _ := api.ResolveEngine(st.Engines, engine, version)
		out = append(out, api.BackupJob{ID: j.ID, Kind: j.Kind, Backup: st.Backups[j.BackupID], MemberID: m.ID, Addr: memberAddr(st, m),
			Password: a.FleetPassword, AOF: a.Settings.Persistence == api.PersistenceAOF, Engine: engine, Version: version,
			Image: ev.Images[api.RoleRedis], PlanMemoryMB: plan.MemoryMB, Store: b.storeJSON, Keys: b.keysJSON})
	}
	return out
}

// audit logs one admin call about backups and its outcome.
func (s *Server) audit(call string, err error, attrs ...any) {
	attrs = append([]any{"call", call}, attrs...)
	if err != nil {
		s.log.Warn("audit", append(attrs, "status", api.HTTPStatus(err), "refused", api.Message(err))...)
		return
	}
	s.log.Info("audit", attrs...)
}

// handleBackups lists an app's backups, newest first (GET
// /v1/backups?app=APP).
func (s *Server) handleBackups(w http.ResponseWriter, r *http.Request) error {
	app := r.URL.Query().Get("app")
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	var (
		out   []api.Backup
		addon bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		_, addon = st.addonByApp(app)
		out = st.backupsOf(app)
	})
	if !addon && len(out) == 0 {
		return fmt.Errorf("%w: app %s has no redis addon, hence no backups", api.ErrNotFound, app)
	}
	if out == nil {
		out = []api.Backup{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleBackupCreate takes a manual backup (POST /v1/backups). Every plan
// may be backed up by hand, whether or not its plan takes daily backups.
func (s *Server) handleBackupCreate(w http.ResponseWriter, r *http.Request) (err error) {
	var req api.BackupCreateRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := api.ValidateAppName(req.App); err != nil {
		return err
	}
	var id string
	defer func() { s.audit("backups-create", err, "app", req.App, "backup", id, "pin", req.Pin) }()
	var (
		a      api.Addon
		ok     bool
		active api.Operation
		busy   bool
		plan   api.Plan
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		a, ok = st.addonByApp(req.App)
		a.Members = append([]api.Member(nil), a.Members...)
		active, busy = st.activeOperation(a.ID)
		plan, _ = api.FindPlan(st.Plans, a.Plan)
	})
	if !ok {
		return fmt.Errorf("%w: app %s has no redis addon to back up", api.ErrNotFound, req.App)
	}
	if err := operation.CheckBackup(a, active, busy); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		opID, err := newOperationID()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		id = bk.ManualID(a.ID, now)
		b := api.Backup{ID: id, AddonID: a.ID, App: a.App, Kind: api.BackupManual, CreatedAt: now, Status: api.BackupRunning,
			Attempts: 1, Pinned: req.Pin}
		op := api.Operation{ID: opID, AddonID: a.ID, App: a.App, Kind: api.OpBackup, State: api.OpPending, Steps: operation.BackupSteps(),
			BackupID: id, CreatedAt: now, UpdatedAt: now}
		res, err := s.store.Apply(r.Context(), CmdBackupCreate, BackupCreateCmd{Backup: b, Operation: op, At: now})
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		bc := res.(BackupCreated)
		msg := fmt.Sprintf("Backup %s of addon %s is being taken (operation %s); follow it with: cacheplane backups --app %s",
			bc.Backup.ID, a.ID, bc.Operation.ID, a.App)
		if bc.Existing {
			msg = fmt.Sprintf("Backup %s of addon %s was asked for within the same second: it is %s (operation %s)",
				bc.Backup.ID, a.ID, bc.Backup.Status, bc.Operation.ID)
		} else if !plan.Backups {
			msg += fmt.Sprintf(" (plan %s takes no daily backups; manual ones are kept like any other)", a.Plan)
		}
		writeJSON(w, http.StatusAccepted, api.BackupCreateResponse{Backup: bc.Backup, Operation: bc.Operation, Message: msg})
		return nil
	}
}

// handleBackupRestore restores a backup into its app's addon (POST
// /v1/backups/{id}/restore): the checks of operation.CheckRestore, then
// one entry starts the restore operation.
func (s *Server) handleBackupRestore(w http.ResponseWriter, r *http.Request) (err error) {
	id := r.PathValue("id")
	if err := api.ValidateBackupID(id); err != nil {
		return err
	}
	var req api.BackupRestoreRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := api.ValidateAppName(req.App); err != nil {
		return err
	}
	defer func() { s.audit("backups-restore", err, "app", req.App, "backup", id) }()
	in := operation.RestoreRequest{App: req.App, BackupID: id, Confirm: req.Confirm}
	s.store.FSM().Read(func(st *State, _ uint64) {
		in.Backup, in.BackupKnown = st.Backups[id]
		in.Addon, in.AddonKnown = st.addonByApp(req.App)
		in.Addon.Members = nil
		if in.AddonKnown {
			in.Active, in.Busy = st.activeOperation(in.Addon.ID)
		}
	})
	if err := operation.CheckRestore(in); err != nil {
		return err
	}
	a := in.Addon
	for attempt := 0; ; attempt++ {
		opID, err := newOperationID()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		op := api.Operation{ID: opID, AddonID: a.ID, App: a.App, Kind: api.OpRestore, State: api.OpPending, Steps: operation.RestoreSteps(),
			BackupID: id, CreatedAt: now, UpdatedAt: now}
		_, err = s.store.Apply(r.Context(), CmdRestoreCreate, RestoreCreateCmd{AddonID: a.ID, App: a.App, BackupID: id, Operation: op, At: now})
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusAccepted, api.BackupRestoreResponse{Operation: op,
			Message: fmt.Sprintf("Backup %s (%s, %d keys) is being restored into addon %s: its keys replace the addon's (operation %s); follow it with: cacheplane operations --addon %s",
				id, in.Backup.CreatedAt.UTC().Format(time.RFC3339), in.Backup.Keys, a.ID, op.ID, a.ID)})
		return nil
	}
}

// handleBackupDownload streams a backup as its plaintext tar.gz (GET
// /v1/backups/{id}/download?app=APP; id "latest" is the app's newest good
// backup). It is served by the coordinator that receives it, from its own
// FSM and the store, never forwarded: the stored object is read twice, a
// first pass checking its checksum and decryption (a corrupt object is
// refused with 422 before a byte is sent), then the stream. Memory stays
// flat (fixed buffers). A failure in the second pass cuts the connection:
// the client never sees a complete-looking archive.
func (s *Server) handleBackupDownload(w http.ResponseWriter, r *http.Request) {
	app, id := r.URL.Query().Get("app"), r.PathValue("id")
	var (
		b       api.Backup
		n       int64
		started bool
	)
	err := func() error {
		if err := api.ValidateAppName(app); err != nil {
			return err
		}
		if id != api.LatestBackup {
			if err := api.ValidateBackupID(id); err != nil {
				return err
			}
		}
		var (
			list  []api.Backup
			addon bool
		)
		s.store.FSM().Read(func(st *State, _ uint64) {
			_, addon = st.addonByApp(app)
			list = st.backupsOf(app)
		})
		if !addon && len(list) == 0 {
			return fmt.Errorf("%w: app %s has no redis addon, hence no backups", api.ErrNotFound, app)
		}
		var err error
		if b, err = pickDownload(app, id, list); err != nil {
			return err
		}
		id = b.ID
		st, err := s.backups.Store()
		if err != nil {
			return err
		}
		if _, err := backup.Fetch(r.Context(), st, b.StoreKey, s.backups.keys, b.KeyID, b.Checksum, io.Discard); err != nil {
			return downloadErr(b, st, err)
		}
		hv, err := api.EncodeBackupHeader(b)
		if err != nil {
			return err
		}
		h := w.Header()
		h.Set(api.BackupHeader, hv)
		h.Set("Content-Type", "application/gzip")
		h.Set("Content-Disposition", `attachment; filename="`+bk.DownloadName(b)+`"`)
		h.Set(headerServedBy, s.cfg.ID)
		if b.ArchiveBytes > 0 {
			h.Set("Content-Length", fmt.Sprint(b.ArchiveBytes))
		}
		w.WriteHeader(http.StatusOK)
		started = true
		n, err = backup.Fetch(r.Context(), st, b.StoreKey, s.backups.keys, b.KeyID, b.Checksum, w)
		return err
	}()
	s.audit("backups-download", err, "app", app, "backup", id, "bytes", n)
	switch {
	case err == nil:
	case !started:
		writeError(w, err)
	default:
		// Headers are sent: cut the connection so the client sees a
		// failed transfer, not a short archive.
		panic(http.ErrAbortHandler)
	}
}

// pickDownload finds the backup id (or the newest good one for "latest")
// among app's backups, newest first.
func pickDownload(app, id string, list []api.Backup) (api.Backup, error) {
	if id == api.LatestBackup {
		for _, b := range list {
			if b.Good() {
				return b, nil
			}
		}
		return api.Backup{}, fmt.Errorf("%w: app %s has no good backup to download yet (see: cacheplane backups --app %s)", api.ErrNotFound, app, app)
	}
	for _, b := range list {
		if b.ID != id {
			continue
		}
		if b.Deleted || b.Status != api.BackupDone {
			return b, fmt.Errorf("%w: %s: nothing to download", api.ErrConflict, operation.NotGood(b))
		}
		return b, nil // a backup its drill refused can still be downloaded
	}
	return api.Backup{}, fmt.Errorf("%w: app %s has no backup %s (see: cacheplane backups --app %s)", api.ErrNotFound, app, id, app)
}

// downloadErr says why a stored backup cannot be sent.
func downloadErr(b api.Backup, st backupstore.Store, err error) error {
	switch {
	case errors.Is(err, backupstore.ErrCorrupt):
		msg := err.Error()
		if i := strings.Index(msg, "is corrupt: "); i >= 0 {
			msg = msg[i+len("is corrupt: "):]
		}
		msg = strings.ReplaceAll(msg, "backupstore: ", "")
		return fmt.Errorf("%w: backup %s is corrupt: %s; it cannot be downloaded or restored", api.ErrCorrupt, b.ID, msg)
	case errors.Is(err, backupstore.ErrNotFound):
		return fmt.Errorf("%w: the stored object of backup %s (%s) is missing from %s", api.ErrNotFound, b.ID, b.StoreKey, st)
	case errors.Is(err, backupstore.ErrUnknownKey):
		return fmt.Errorf("backup %s was sealed with key %q, which this coordinator's backup_keys_file does not hold: copy the cluster's keys file here", b.ID, b.KeyID)
	}
	return fmt.Errorf("read backup %s from %s: %w", b.ID, st, err)
}

// jobIDRe is the form of the job ids the leader draws.
var jobIDRe = regexp.MustCompile(`^job-[0-9a-f]{12}$`)

// validateReport checks an agent's job report.
func validateReport(r api.JobReport) error {
	if err := api.ValidateMemberID("host", r.HostID); err != nil {
		return err
	}
	if !jobIDRe.MatchString(r.JobID) {
		return api.Invalidf("job id %q is malformed (job-<12 hex digits>)", r.JobID)
	}
	if err := api.ValidateBackupID(r.BackupID); err != nil {
		return err
	}
	if r.Kind != api.JobBackup && r.Kind != api.JobRestore {
		return api.Invalidf("job kind %q: want %q or %q", r.Kind, api.JobBackup, api.JobRestore)
	}
	if !r.OK && strings.TrimSpace(r.Error) == "" {
		return api.Invalidf("job %s failed without saying why (error is empty)", r.JobID)
	}
	if len(r.Error) > 4096 || len(r.Verified) > 1024 {
		return api.Invalidf("job %s: error or verdict longer than allowed", r.JobID)
	}
	if r.OK && r.Kind == api.JobBackup {
		if !sha256Hex(r.Checksum) || (r.ArchiveChecksum != "" && !sha256Hex(r.ArchiveChecksum)) {
			return api.Invalidf("job %s: checksums must be SHA-256 in hex", r.JobID)
		}
		if r.SizeBytes <= 0 || r.KeyID == "" {
			return api.Invalidf("job %s: a done dump reports its stored size and key id", r.JobID)
		}
		if r.Verified != "" && !strings.HasPrefix(r.Verified, api.VerifiedPrefix) && !strings.HasPrefix(r.Verified, "not verified") {
			return api.Invalidf("job %s: verdict %q must start with %q or %q", r.JobID, r.Verified, api.VerifiedPrefix, api.NotVerifiedPrefix)
		}
	}
	return nil
}

func sha256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// handleJobReport records an agent's report of a job (POST
// /v1/agent/jobs). A report sent again is accepted and changes nothing; a
// report of a job the coordinator no longer knows (its operation ended)
// is 404: the agent drops it.
func (s *Server) handleJobReport(w http.ResponseWriter, r *http.Request) error {
	var rep api.JobReport
	if err := api.Decode(r.Body, &rep); err != nil {
		return err
	}
	if err := validateReport(rep); err != nil {
		return err
	}
	if err := checkHost(r, rep.HostID); err != nil {
		return err
	}
	if _, err := s.store.Apply(r.Context(), CmdJobReport, JobReportCmd{Report: rep, At: s.now().UTC()}); err != nil {
		return err
	}
	s.log.Info("job reported", "job", rep.JobID, "kind", rep.Kind, "backup", rep.BackupID, "host", rep.HostID, "ok", rep.OK, "error", rep.Error)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// backupsController is the leader's backup schedule and retention: every
// BackupCheckEvery (and at once on taking over) it starts the periodic
// backups backup.Due says are due (the addons whose plan has backups,
// each dumped where operation.DumpSource says, or waiting with why), and
// once a day (and at once on taking over) it applies backup.Retain in the
// schedule's zone: each backup it drops has its stored object deleted,
// then its record marked deleted; records deleted more than
// api.DeletedBackupKept ago are forgotten.
type backupsController struct {
	store stateWriter
	obs   *observed
	env   *backupEnv
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	retainedDay string    // the day (schedule zone) retention last ran to the end
	retainAfter time.Time // after a failed deletion, retention waits until then
	// waiting: a member runs a release without backups (logged once).
	waiting bool
}

// protocolGate is the store's check that every member applies a command.
type protocolGate interface{ Supports(CommandType) error }

// mixed is true while some coordinator's release cannot apply backup
// commands: the schedule and retention wait (one log line), and resume
// once the last member is upgraded.
func (c *backupsController) mixed() bool {
	g, ok := c.store.(protocolGate)
	if !ok {
		return false
	}
	if err := g.Supports(CmdBackupCreate); err != nil {
		if !c.waiting {
			c.log.Info("periodic backups and retention wait until every coordinator is upgraded", "why", api.Message(err))
			c.waiting = true
		}
		return true
	}
	if c.waiting {
		c.log.Info("every coordinator supports backups: periodic backups and retention resume")
		c.waiting = false
	}
	return false
}

// retainRetry paces retention after a deletion failed (a store down).
const retainRetry = 10 * time.Minute

func (c *backupsController) Name() string { return "backups" }

func (c *backupsController) Run(ctx context.Context) {
	t := time.NewTicker(c.every)
	defer t.Stop()
	c.retainedDay, c.retainAfter, c.waiting = "", time.Time{}, false
	for {
		if !c.mixed() {
			c.due(ctx)
			c.retain(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stateWriter is the Raft store as the backups controller uses it.
type stateWriter interface {
	FSM() *FSM
	Apply(ctx context.Context, t CommandType, payload any) (any, error)
}

// candidates are the addons as backup.Due sees them.
func (c *backupsController) candidates() ([]bk.Candidate, []api.Backup) {
	var (
		cands   []bk.Candidate
		backups []api.Backup
	)
	c.store.FSM().Read(func(st *State, _ uint64) {
		for _, b := range st.Backups {
			backups = append(backups, b)
		}
		for _, a := range sortedAddons(st.Addons) {
			plan, known := api.FindPlan(st.Plans, a.Plan)
			cand := bk.Candidate{AddonID: a.ID, App: a.App, Backups: known && plan.Backups, CreatedAt: a.CreatedAt}
			if !cand.Backups || a.Status == api.AddonRemoving {
				cand.Backups = false
				cands = append(cands, cand)
				continue
			}
			if o, busy := st.activeOperation(a.ID); busy {
				cand.Busy, cand.Why = true, fmt.Sprintf("operation %s (%s) runs on the addon", o.ID, o.Kind)
			} else if a.Status != api.AddonRunning {
				cand.Busy, cand.Why = true, "the addon is "+string(a.Status)
			}
			v := operation.View{Addon: a, Exists: true, Plan: plan, PlanKnown: known, Hosts: map[string]api.Host{}, Observed: map[string]operation.Observed{}}
			for _, m := range a.Members {
				h := st.Hosts[m.HostID]
				v.Hosts[m.HostID] = h
				v.Observed[m.ID] = observe(c.obs, h, m)
			}
			if m, why, _ := operation.DumpSource(v); why == "" {
				cand.HostID = m.HostID
			} else if !cand.Busy {
				cand.Why = why
			}
			cands = append(cands, cand)
		}
	})
	return cands, backups
}

// due starts the periodic backups that are due.
func (c *backupsController) due(ctx context.Context) {
	now := c.now().UTC()
	cands, backups := c.candidates()
	starts, waits := bk.Due(now, c.env.schedule, cands, backups)
	c.env.metrics.setWaiting(len(waits))
	for _, w := range waits {
		c.log.Debug("backup waits", "addon", w.AddonID, "backup", w.ID, "why", w.Why)
	}
	for _, s := range starts {
		if ctx.Err() != nil {
			return
		}
		b := s.Backup
		opID, err := newOperationID()
		if err != nil {
			c.log.Error("cannot draw an operation id", "err", err)
			return
		}
		op := api.Operation{ID: opID, AddonID: b.AddonID, App: b.App, Kind: api.OpBackup, State: api.OpPending, Steps: operation.BackupSteps(),
			BackupID: b.ID, CreatedAt: now, UpdatedAt: now}
		res, err := c.store.Apply(ctx, CmdBackupCreate, BackupCreateCmd{Backup: b, Operation: op, At: now})
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("cannot start a periodic backup; will retry", "addon", b.AddonID, "backup", b.ID, "err", err)
			}
			continue
		}
		if bc := res.(BackupCreated); !bc.Existing {
			c.log.Info("periodic backup started", "addon", b.AddonID, "backup", b.ID, "attempt", bc.Backup.Attempts, "host", b.HostID, "op", op.ID)
		}
	}
}

// retain applies retention once per day of the schedule's zone.
func (c *backupsController) retain(ctx context.Context) {
	now := c.now().UTC()
	loc, err := c.env.schedule.Location()
	if err != nil {
		loc = time.UTC
	}
	day := now.In(loc).Format(bk.DayLayout)
	if day == c.retainedDay || now.Before(c.retainAfter) {
		return
	}
	var backups []api.Backup
	c.store.FSM().Read(func(st *State, _ uint64) {
		for _, b := range st.Backups {
			backups = append(backups, b)
		}
	})
	byID := map[string]api.Backup{}
	for _, b := range backups {
		byID[b.ID] = b
	}
	var deleted []BackupDeletion
	failed := false
	for _, v := range bk.Retain(now, loc, backups) {
		if v.Keep {
			continue
		}
		b := byID[v.ID]
		if err := c.deleteObject(ctx, b); err != nil {
			failed = true
			if ctx.Err() == nil {
				c.log.Warn("retention cannot delete a backup's object; will retry", "backup", b.ID, "key", b.StoreKey, "err", err)
			}
			continue
		}
		deleted = append(deleted, BackupDeletion{ID: v.ID, Reason: v.Reason})
		c.log.Info("retention deleted a backup", "addon", b.AddonID, "backup", b.ID, "reason", v.Reason)
	}
	if len(deleted) > 0 {
		if _, err := c.store.Apply(ctx, CmdBackupsDeleted, BackupsDeletedCmd{Deleted: deleted, At: now}); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("cannot record retention's deletions; will retry", "err", err)
			}
			return
		}
	}
	if forget := bk.Forget(now, backups); len(forget) > 0 {
		if _, err := c.store.Apply(ctx, CmdBackupsForget, BackupsForgetCmd{IDs: forget}); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("cannot forget deleted backups; will retry", "err", err)
			}
			return
		}
		c.log.Info("forgot the records of deleted backups", "count", len(forget))
	}
	if failed {
		c.retainAfter = now.Add(retainRetry)
		return
	}
	c.retainedDay = day
}

// deleteObject deletes b's stored object (a failed backup may have none).
func (c *backupsController) deleteObject(ctx context.Context, b api.Backup) error {
	if b.StoreKey == "" {
		return nil
	}
	st, err := c.env.Store()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return st.Delete(dctx, b.StoreKey)
}

package api

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
)

// BackupStatus is the state of a backup.
type BackupStatus string

// Backup statuses.
const (
	BackupRunning BackupStatus = "running"
	BackupDone    BackupStatus = "done"
	BackupError   BackupStatus = "error"
)

// BackupKind says who asked for a backup.
type BackupKind string

// Backup kinds.
const (
	// BackupPeriodic is the daily backup the leader's schedule takes.
	BackupPeriodic BackupKind = "periodic"
	// BackupManual is a backup an operator asked for (backups-create).
	BackupManual BackupKind = "manual"
)

// Prefixes of Backup.Verified, written by the restore drill.
const (
	VerifiedPrefix    = "verified: "
	NotVerifiedPrefix = "not verified: "
)

// DeletedBackupKept is how long the record of a backup that retention
// deleted stays in the FSM (with Deleted, DeletedAt and DeletedReason) before
// the leader forgets it: long enough for `backups` to say why a backup an
// operator remembers is gone, short enough that the FSM does not grow with
// the age of the fleet. The stored object itself is deleted at once.
const DeletedBackupKept = 30 * 24 * time.Hour

// Backup is the record of one dump of an addon. Names (ID, StoreKey, the
// download name) are made by package backup; the coordinator assigns Seq and
// the times, the agent that runs the dump fills the figures.
type Backup struct {
	ID      string     `json:"id"`
	AddonID string     `json:"addon_id"`
	App     string     `json:"app"`
	Kind    BackupKind `json:"kind"`
	// Day is, for a periodic backup, the calendar day (in the schedule's
	// time zone, Europe/Paris by default) it is for, as "2026-12-07"; ""
	// for a manual one.
	Day string `json:"day,omitempty"`
	// Seq is the n of the download name: 1 for the app's first backup, +1
	// for each next one (assigned by the coordinator, never reused).
	Seq int `json:"seq"`
	// CreatedAt is when the attempt that made the dump started (a retry of
	// a failed periodic backup moves it); FinishedAt when it ended.
	CreatedAt  time.Time    `json:"created_at"`
	FinishedAt time.Time    `json:"finished_at,omitzero"`
	Status     BackupStatus `json:"status"`
	// Reason is why the backup failed (one line), or, while it runs, what
	// it waits for.
	Reason string `json:"reason,omitempty"`
	// Attempts counts the attempts made for this ID (a failed periodic
	// backup is retried the same day under the same ID); NextAttempt is
	// when the next retry may start.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	MemberID    string    `json:"member_id,omitempty"`
	HostID      string    `json:"host_id,omitempty"`
	SizeBytes   int64     `json:"size_bytes"`
	// Checksum is the SHA-256 (hex) of the stored object, as stored
	// (compressed and encrypted).
	Checksum string `json:"checksum,omitempty"`
	StoreKey string `json:"store_key,omitempty"`
	// KeyID names the encryption key the object was encrypted with.
	KeyID string `json:"key_id,omitempty"`
	// Keys is the member's key count at BGSAVE time.
	Keys int64 `json:"keys"`
	// Verified is the restore drill's outcome: "" (not yet),
	// "verified: ..." or "not verified: why".
	Verified string `json:"verified,omitempty"`
	// Pinned keeps a manual backup whatever its age.
	Pinned bool `json:"pinned,omitempty"`
	// Deleted says retention deleted the stored object; the record stays
	// DeletedBackupKept after DeletedAt, with the reason.
	// ArchiveBytes and ArchiveChecksum (SHA-256, hex) are the plaintext
	// archive's, as a download writes it: the CLI checks them.
	ArchiveBytes    int64     `json:"archive_bytes,omitempty"`
	ArchiveChecksum string    `json:"archive_checksum,omitempty"`
	Deleted         bool      `json:"deleted,omitempty"`
	DeletedAt       time.Time `json:"deleted_at,omitzero"`
	DeletedReason   string    `json:"deleted_reason,omitempty"`
}

// Good reports whether b can be restored as far as we know: done, not
// refused by the restore drill (a backup not drilled yet counts as good) and
// not deleted.
func (b Backup) Good() bool {
	return b.Status == BackupDone && !strings.HasPrefix(b.Verified, "not verified") && !b.Deleted
}

// Backup ids are <addon id>-<YYYYMMDD> (periodic) or
// <addon id>-m<YYYYMMDD>T<hhmmss>Z (manual); an addon id is lowercase
// letters, digits and single hyphens, starting with a letter.
var (
	addonIDRe  = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)
	backupIDRe = regexp.MustCompile(`^([a-z][a-z0-9]*(?:-[a-z0-9]+)*)-(?:[0-9]{8}|m[0-9]{8}T[0-9]{6}Z)$`)
)

// MaxAddonIDLen bounds an addon id (an app name is at most 48 characters,
// the id adds "-<n>").
const MaxAddonIDLen = 63

// ValidateAddonID checks an addon id as it appears in backup ids and store
// keys: up to 63 lowercase letters, digits and single hyphens, starting with
// a letter (e.g. my-app-3030).
func ValidateAddonID(id string) error {
	if id == "" {
		return Invalidf("addon id is missing")
	}
	if len(id) > MaxAddonIDLen || !addonIDRe.MatchString(id) {
		return Invalidf("addon id %q is malformed: use up to %d lowercase letters, digits and single hyphens, starting with a letter (e.g. my-app-3030)", id, MaxAddonIDLen)
	}
	return nil
}

// ValidateBackupID checks a backup id as passed to --backup: the addon id
// followed by -YYYYMMDD (a daily backup) or -mYYYYMMDDThhmmssZ (a manual
// one), as `backups` lists them.
func ValidateBackupID(id string) error {
	if id == "" {
		return Invalidf("backup id is missing: pass --backup ID (see `backups --app APP`)")
	}
	m := backupIDRe.FindStringSubmatch(id)
	if m == nil || len(m[1]) > MaxAddonIDLen {
		return Invalidf("backup id %q is malformed: expected <addon id>-YYYYMMDD or <addon id>-mYYYYMMDDThhmmssZ as `backups --app APP` lists them (e.g. my-app-3030-20261207)", id)
	}
	return nil
}

// Jobs: the coordinator asks an agent to run a backup (dump, then the
// restore drill) or a restore by listing it in the agent's assignments
// (Assignments.Jobs); the agent runs each job once per ID and reports it
// (JobReport, POST /v1/agent/jobs). A job's ID is new for every attempt, so
// a retry is a new job and an agent never runs one twice.

// JobKind is what a job does.
type JobKind string

// Job kinds.
const (
	// JobBackup dumps a member into the backup store (BGSAVE, then the
	// RDB, or the AOF files, through tar.gz and age into the store), then
	// restore-drills it in a scratch server.
	JobBackup JobKind = "backup"
	// JobRestore replaces an addon's dataset by a stored backup (a scratch
	// server loads it, every key is copied into the primary).
	JobRestore JobKind = "restore"
)

// BackupJob is one job for an agent. It holds secrets (the addon's
// password, the store's credentials, the encryption keys): never log it.
type BackupJob struct {
	ID   string  `json:"id"`
	Kind JobKind `json:"kind"`
	// Backup is the record: its ID, AddonID, StoreKey, and for a restore
	// its KeyID and Checksum.
	Backup Backup `json:"backup"`
	// MemberID is the member on this host the job works on (the dumped
	// member; for a restore, the addon's primary), Addr its host:port.
	MemberID string `json:"member_id"`
	Addr     string `json:"addr"`
	// Password is the fleet's credential of the addon (redisctl.FleetUser):
	// a dump runs BGSAVE and a restore RESTORE, which the app's user may
	// not run.
	Password Secret `json:"password"`
	// AOF: the member runs with appendonly yes.
	AOF bool `json:"aof,omitempty"`
	// Engine, Version and Image: the addon's engine version, which the
	// scratch server runs (drill and restore); PlanMemoryMB sizes it.
	Engine       Engine `json:"engine"`
	Version      string `json:"version"`
	Image        string `json:"image"`
	PlanMemoryMB int    `json:"plan_memory_mb"`
	// Store is the backup store's configuration (backupstore.Config as
	// JSON) and Keys the encryption keyring (backupstore.Keyring as JSON).
	Store json.RawMessage `json:"store"`
	Keys  json.RawMessage `json:"keys"`
}

// String names a job without its secrets.
func (j BackupJob) String() string {
	return fmt.Sprintf("%s job %s (backup %s, member %s)", j.Kind, j.ID, j.Backup.ID, j.MemberID)
}

// LogValue names a job in slog without its secrets.
func (j BackupJob) LogValue() slog.Value { return slog.StringValue(j.String()) }

// JobReport is an agent's account of a finished job.
type JobReport struct {
	HostID   string  `json:"host_id"`
	JobID    string  `json:"job_id"`
	BackupID string  `json:"backup_id"`
	Kind     JobKind `json:"kind"`
	OK       bool    `json:"ok"`
	// Error is why the job failed (one line, no secret).
	Error string `json:"error,omitempty"`
	// A backup's figures: the stored object's size, SHA-256 and key id,
	// the member's key count at BGSAVE time, the restore drill's verdict
	// ("verified: …" or "not verified: why"), and the plaintext archive's
	// size and SHA-256 (what a download writes).
	SizeBytes       int64  `json:"size_bytes,omitempty"`
	Checksum        string `json:"checksum,omitempty"`
	KeyID           string `json:"key_id,omitempty"`
	Keys            int64  `json:"keys,omitempty"`
	Verified        string `json:"verified,omitempty"`
	ArchiveBytes    int64  `json:"archive_bytes,omitempty"`
	ArchiveChecksum string `json:"archive_checksum,omitempty"`
	// A restore's: keys copied into the primary, and whether its dataset
	// was replaced at all (false: a failed restore left it untouched).
	Restored   int64     `json:"restored,omitempty"`
	Flushed    bool      `json:"flushed,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Admin API of backups.

// BackupCreateRequest asks for a manual backup of app's addon.
type BackupCreateRequest struct {
	App string `json:"app"`
	// Pin keeps it whatever its age (retention skips it).
	Pin bool `json:"pin,omitempty"`
}

// BackupCreateResponse answers it: the record and its operation.
type BackupCreateResponse struct {
	Backup    Backup    `json:"backup"`
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

// BackupRestoreRequest asks to restore backup ID into app's addon; Confirm
// must repeat the app's name.
type BackupRestoreRequest struct {
	App     string `json:"app"`
	Confirm string `json:"confirm"`
}

// BackupRestoreResponse answers it with the restore operation.
type BackupRestoreResponse struct {
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

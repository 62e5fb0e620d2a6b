package coordinator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// CommandType is the first byte of every Raft log entry. The list is
// append-only: a value is never renumbered or reused, so a newer coordinator
// applies an older log. Types with IgnoreUnknownFlag set may be skipped by an
// older coordinator that does not know them; all others make it stop.
type CommandType uint8

// IgnoreUnknownFlag marks a command that older coordinators may ignore.
const IgnoreUnknownFlag CommandType = 128

// Command types. Append only.
const (
	CmdCoordinatorUpsert CommandType = 1
	CmdCoordinatorRemove CommandType = 2
	CmdCatalogSet        CommandType = 3
	CmdHostUpsert        CommandType = 4
	CmdAddonCreate       CommandType = 5
	CmdAddonRemove       CommandType = 6
	CmdOperationUpdate   CommandType = 7
	CmdAddonDelete       CommandType = 8
	CmdAddonPlaced       CommandType = 9
	CmdAddonSettings     CommandType = 10
	CmdPrimaryObserved   CommandType = 11
	CmdOperationCreate   CommandType = 12
	CmdMemberAdded       CommandType = 13
	CmdMemberRemoved     CommandType = 14
	CmdEntrypointHolder  CommandType = 15
	CmdOperationCancel   CommandType = 16
	CmdAddonPlanChange   CommandType = 17
	CmdAddonUpgrade      CommandType = 18
	CmdMemberVersion     CommandType = 19
	CmdBackupCreate      CommandType = 20
	CmdBackupUpdate      CommandType = 21
	CmdJobStart          CommandType = 22
	CmdJobReport         CommandType = 23
	CmdBackupsDeleted    CommandType = 24
	CmdBackupsForget     CommandType = 25
	CmdRestoreCreate     CommandType = 26
	// CmdAddonFleetCredential gives an addon created before the fleet
	// credential existed its own (level 2: the release before backups has
	// no fleet credential either).
	CmdAddonFleetCredential CommandType = 27
	// CmdSealed wraps another entry sealed with the state keys
	// (statekeys.go): [CmdSealed][sealed blob of [type][json]].
	CmdSealed CommandType = 28
	// Daemon identities:
	CmdCASet       CommandType = 29
	CmdTokenCreate CommandType = 30
	CmdTokenUse    CommandType = 31
	CmdCertRenew   CommandType = 32
	CmdHostRemove  CommandType = 33
	// Password rotation (rotate.go).
	CmdPasswordRotate       CommandType = 34
	CmdPasswordRotateStep   CommandType = 35
	CmdPasswordRotateFinish CommandType = 36
	// CmdAddonCert records an addon's server certificate (addoncert.go).
	CmdAddonCert CommandType = 37
)

// Protocol levels. A release applies every command up to its level; the
// leader proposes a command only once every member of the Raft
// configuration is recorded at its level or above (Store.Supports), and a
// member that meets a command above its own level stops (FSM.Apply).
const (
	// ProtocolBase: commands 1-19, what every release applies (the
	// release before backups is level 1 and records no level).
	ProtocolBase = 1
	// ProtocolBackups adds the backup and restore commands 20-26 and the
	// daemon identities' 28-32.
	ProtocolBackups = 2
	// MaxProtocol is this binary's level: the highest "since" of commands.
	MaxProtocol = ProtocolBackups
)

// protocolFeature says, for the operator, what each level brought.
var protocolFeature = map[int]string{
	ProtocolBase:    "the addon commands",
	ProtocolBackups: "backups",
}

// commands is the one table of command types: their names and the
// protocol level since which releases apply them. Append only. A new type
// goes here and into FSM.apply; its level is the current MaxProtocol while
// that level is unreleased, else MaxProtocol+1 (a new level, with its
// protocolFeature). A controller proposing it on its own waits while
// Store.Supports refuses it (see backupsController.mixed).
var commands = map[CommandType]struct {
	name  string
	since int
}{
	CmdCoordinatorUpsert: {"coordinator-upsert", ProtocolBase},
	CmdCoordinatorRemove: {"coordinator-remove", ProtocolBase},
	CmdCatalogSet:        {"catalog-set", ProtocolBase},
	CmdHostUpsert:        {"host-upsert", ProtocolBase},
	CmdAddonCreate:       {"addon-create", ProtocolBase},
	CmdAddonRemove:       {"addon-remove", ProtocolBase},
	CmdOperationUpdate:   {"operation-update", ProtocolBase},
	CmdAddonDelete:       {"addon-delete", ProtocolBase},
	CmdAddonPlaced:       {"addon-placed", ProtocolBase},
	CmdAddonSettings:     {"addon-settings", ProtocolBase},
	CmdPrimaryObserved:   {"primary-observed", ProtocolBase},
	CmdOperationCreate:   {"operation-create", ProtocolBase},
	CmdMemberAdded:       {"member-added", ProtocolBase},
	CmdMemberRemoved:     {"member-removed", ProtocolBase},
	CmdEntrypointHolder:  {"entrypoint-holder", ProtocolBase},
	CmdOperationCancel:   {"operation-cancel", ProtocolBase},
	CmdAddonPlanChange:   {"addon-plan-change", ProtocolBase},
	CmdAddonUpgrade:      {"addon-upgrade", ProtocolBase},
	CmdMemberVersion:     {"member-version", ProtocolBase},
	CmdBackupCreate:      {"backup-create", ProtocolBackups},
	CmdBackupUpdate:      {"backup-update", ProtocolBackups},
	CmdJobStart:          {"job-start", ProtocolBackups},
	CmdJobReport:         {"job-report", ProtocolBackups},
	CmdBackupsDeleted:    {"backups-deleted", ProtocolBackups},
	CmdBackupsForget:     {"backups-forget", ProtocolBackups},
	CmdRestoreCreate:     {"restore-create", ProtocolBackups},

	// The fleet credential (docs/security.md).
	CmdAddonFleetCredential: {"addon-fleet-credential", ProtocolBackups},

	// Entries sealed at rest (statekeys.go).
	CmdSealed: {"sealed", ProtocolBackups},
	// Daemon identities: the same release as backups (level 2).
	CmdCASet:       {"ca-set", ProtocolBackups},
	CmdTokenCreate: {"token-create", ProtocolBackups},
	CmdTokenUse:    {"token-use", ProtocolBackups},
	CmdCertRenew:   {"cert-renew", ProtocolBackups},
	CmdHostRemove:  {"host-remove", ProtocolBackups},

	// Password rotation (rotate.go).
	CmdPasswordRotate:       {"password-rotate", ProtocolBackups},
	CmdPasswordRotateStep:   {"password-rotate-step", ProtocolBackups},
	CmdPasswordRotateFinish: {"password-rotate-finish", ProtocolBackups},

	// Addon server certificates (addoncert.go): level 2 is not released
	// yet.
	CmdAddonCert: {"addon-cert", ProtocolBackups},
}

func (t CommandType) String() string {
	if c, ok := commands[t]; ok {
		return c.name
	}
	return fmt.Sprintf("command-%d", uint8(t))
}

// Since is the protocol level from which releases apply t; false for a
// type this binary does not know.
func (t CommandType) Since() (int, bool) {
	c, ok := commands[t]
	return c.since, ok
}

// Command payloads. Fields are only ever added; the JSON encoding lets an
// older entry decode into a newer struct (missing fields are zero).

// CoordinatorUpsertCmd records a coordinator member's addresses.
type CoordinatorUpsertCmd struct {
	Member api.CoordinatorMember `json:"member"`
}

// CoordinatorRemoveCmd forgets a coordinator member.
type CoordinatorRemoveCmd struct {
	ID string `json:"id"`
}

// CatalogSetCmd replaces the plans and engine catalogs.
type CatalogSetCmd struct {
	Plans   []api.Plan          `json:"plans"`
	Engines []api.EngineVersion `json:"engines"`
}

// HostUpsertCmd registers or updates a host.
type HostUpsertCmd struct {
	Host api.Host `json:"host"`
}

// AddonCreateCmd records a new addon and its provision operation. The leader
// fills IDs, password and times before the entry is proposed.
type AddonCreateCmd struct {
	Addon     api.Addon     `json:"addon"`
	Operation api.Operation `json:"operation"`
}

// AddonRemoveCmd starts the removal of an addon.
type AddonRemoveCmd struct {
	AddonID   string        `json:"addon_id"`
	App       string        `json:"app"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// OperationUpdateCmd replaces an operation's state and steps, optionally
// with the addon's new status.
type OperationUpdateCmd struct {
	Operation   api.Operation   `json:"operation"`
	AddonStatus api.AddonStatus `json:"addon_status,omitempty"`
}

// AddonDeleteCmd forgets an addon once its removal is done.
type AddonDeleteCmd struct {
	AddonID string    `json:"addon_id"`
	At      time.Time `json:"at"`
}

// Encode turns a command into a log entry: one type byte, then JSON.
func Encode(t CommandType, payload any) ([]byte, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, body...), nil
}

// AddonPlacedCmd records where an addon's members run (MembersPlaced in
// DESIGN.md) together with the operation step that placed them. The
// entrypoint is only set when the addon has none: it never changes.
type AddonPlacedCmd struct {
	AddonID    string        `json:"addon_id"`
	Members    []api.Member  `json:"members"`
	Entrypoint string        `json:"entrypoint"`
	Operation  api.Operation `json:"operation"`
}

// AddonSettingsCmd changes an addon's settings and starts the operation that
// waits until its members run with them.
type AddonSettingsCmd struct {
	AddonID   string        `json:"addon_id"`
	Settings  api.Settings  `json:"settings"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// PrimaryObservedCmd records the addon's current primary after a failover
// (observed topology: Sentinel decides, the coordinator records).
type PrimaryObservedCmd struct {
	AddonID   string    `json:"addon_id"`
	PrimaryID string    `json:"primary_id"`
	At        time.Time `json:"at"`
}

// OperationCreateCmd starts an operation on an existing addon (healing,
// drain). It is refused while another operation of the addon is active.
type OperationCreateCmd struct {
	Operation api.Operation `json:"operation"`
}

// MemberAddedCmd adds a member to an addon (a replacement, beside the
// member it replaces) with the operation step that placed it.
type MemberAddedCmd struct {
	AddonID   string        `json:"addon_id"`
	Member    api.Member    `json:"member"`
	Operation api.Operation `json:"operation"`
}

// MemberRemovedCmd drops a member from an addon: it leaves its agent's
// assignments, which destroys it.
type MemberRemovedCmd struct {
	AddonID   string        `json:"addon_id"`
	MemberID  string        `json:"member_id"`
	Operation api.Operation `json:"operation"`
}

// EntrypointHolderCmd moves an addon's entrypoint VIP to one haproxy member.
type EntrypointHolderCmd struct {
	AddonID  string    `json:"addon_id"`
	MemberID string    `json:"member_id"`
	At       time.Time `json:"at"`
}

// OperationCancelCmd asks the engine to stop an operation at its next safe
// point (operations-cancel, or an undrain for the drain's moves).
type OperationCancelCmd struct {
	OperationID string    `json:"operation_id"`
	At          time.Time `json:"at"`
}

// AddonPlanChangeCmd records an addon's new plan (its agents resize its
// redis members live from their next assignment) and starts the
// plan-change operation that checks the resize and tells the app. It is
// refused unless the addon is running with no other active operation and
// the plan is in the catalog.
type AddonPlanChangeCmd struct {
	AddonID   string        `json:"addon_id"`
	App       string        `json:"app"`
	Plan      string        `json:"plan"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// AddonUpgradeCmd starts an engine upgrade of an addon: its operation
// (with the upgrade's record: target, rolling or not, primary, keys) is
// recorded and the addon is updating. It is refused unless the addon is
// running with no other active operation and the target is in the engine
// catalog (the leader checked the upgrade rules and the data before
// proposing). Nothing runs on the new version until the engine sets a
// member's version (CmdMemberVersion).
type AddonUpgradeCmd struct {
	AddonID   string        `json:"addon_id"`
	App       string        `json:"app"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// MemberVersionCmd is an upgrade step's change to the addon, committed
// with the step: members set to an engine version (started again when
// they were stopped) or stopped, the addon's own version recorded (which
// drops every member's own), the entrypoint VIP moved.
type MemberVersionCmd struct {
	AddonID string            `json:"addon_id"`
	Set     []MemberVersionTo `json:"set,omitempty"`
	// Stop lists members whose process stops (data kept).
	Stop []string `json:"stop,omitempty"`
	// Engine and Version, when set, become the addon's, and every member
	// runs them (member versions and stops are cleared).
	Engine  api.Engine `json:"engine,omitempty"`
	Version string     `json:"version,omitempty"`
	// Holder, when set, is the haproxy member given the entrypoint VIP.
	Holder string `json:"holder,omitempty"`
	// AddonStatus, when set, is the addon's new status (a cancelled
	// upgrade leaves it running).
	AddonStatus api.AddonStatus `json:"addon_status,omitempty"`
	Operation   api.Operation   `json:"operation"`
}

// MemberVersionTo sets one member's engine version.
type MemberVersionTo struct {
	MemberID string     `json:"member_id"`
	Engine   api.Engine `json:"engine"`
	Version  string     `json:"version"`
}

// BackupCreateCmd records a backup (running) with its backup operation: a
// new record (the FSM assigns its Seq, the app's next) or, for a periodic
// backup whose record of the day failed, the same record adopted for a
// retry (Attempts grown; same id, same Seq). A record that exists
// otherwise is answered as it is (a manual backup asked twice within a
// second, a retry already adopted) and nothing changes. Refused for an
// addon that is not running or has another active operation.
type BackupCreateCmd struct {
	Backup    api.Backup    `json:"backup"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// BackupCreated answers BackupCreateCmd: the record and its operation;
// Existing when the record was already there (then Operation is the latest
// backup operation of that id, if any).
type BackupCreated struct {
	Backup    api.Backup
	Operation api.Operation
	Existing  bool
}

// BackupUpdateCmd is a backup or restore step's change, committed with the
// step: the backup record as it now stands (a member chosen, the figures
// and drill verdict of a done dump, the reason of a failure), the
// operation and optionally the addon's new status. The record's identity
// (id, addon, app, kind, day, seq, store key, pin) never changes.
type BackupUpdateCmd struct {
	Backup      api.Backup      `json:"backup"`
	Operation   api.Operation   `json:"operation"`
	AddonStatus api.AddonStatus `json:"addon_status,omitempty"`
}

// JobStartCmd records a job (listed in its host's assignments until it is
// reported) with the step that started it.
type JobStartCmd struct {
	Job       operation.Job `json:"job"`
	Operation api.Operation `json:"operation"`
}

// JobReportCmd records an agent's report of a job. A job reported already
// keeps its first report (a report sent again changes nothing).
type JobReportCmd struct {
	Report api.JobReport `json:"report"`
	At     time.Time     `json:"at"`
}

// BackupsDeletedCmd marks backups whose stored object retention deleted:
// the records stay api.DeletedBackupKept with the reason.
type BackupsDeletedCmd struct {
	Deleted []BackupDeletion `json:"deleted"`
	At      time.Time        `json:"at"`
}

// BackupDeletion is one backup retention deleted, and why.
type BackupDeletion struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// BackupsForgetCmd drops the records of deleted backups (retention's,
// once api.DeletedBackupKept has passed). Records not marked deleted stay.
type BackupsForgetCmd struct {
	IDs []string `json:"ids"`
}

// RestoreCreateCmd starts the restore of a backup into its app's addon:
// the operation is recorded and the addon is updating. Refused unless the
// backup is good and of the addon's app, and the addon running with no
// other active operation.
type RestoreCreateCmd struct {
	AddonID   string        `json:"addon_id"`
	App       string        `json:"app"`
	BackupID  string        `json:"backup_id"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// AddonFleetCredentialCmd gives an addon without one its fleet credential
// (api.Addon.FleetPassword: redisctl.FleetUser's password on its redis
// members, its sentinels' password), picked by the leader
// (fleetCredController). An addon that has one keeps it: the command only
// fills a missing credential, so a retried or duplicated entry changes
// nothing. The agents apply it live (agent/fleetauth.go).
type AddonFleetCredentialCmd struct {
	AddonID       string     `json:"addon_id"`
	FleetPassword api.Secret `json:"fleet_password"`
}

package api

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Upgrade is an engine upgrade's own record on its operation: where it
// goes, how, and what it measured and did on its way. Everything a new
// leader needs to resume it is here and in the addon's members.
type Upgrade struct {
	// From and To are catalog keys ("redis-7.0.15", "valkey-8.0.1");
	// Engine and Version are To's.
	From    string `json:"from"`
	To      string `json:"to"`
	Engine  Engine `json:"engine"`
	Version string `json:"version"`
	// Rolling: a replica on To syncs from a primary on From, so a business
	// addon moves one node at a time; else every redis node stops.
	Rolling bool `json:"rolling"`
	// MayDiscardData: the operator accepted that writes SAVE cannot
	// capture may be lost (--may-discard-data).
	MayDiscardData bool `json:"may_discard_data,omitempty"`
	// Primary is the member that was the primary when the upgrade began:
	// a business upgrade ends with it primary again (placement stays as
	// planned).
	Primary string `json:"primary,omitempty"`
	// Keys is the number of keys the primary held when the upgrade was
	// asked (INFO keyspace, every database), -1 when it could not be read:
	// a restarted primary counts as holding its data once it has as many.
	Keys int64 `json:"keys"`
	// Set lists each member whose version was set, when, and the start
	// time of the process it ran then, so a restart is recognised from
	// what its agent reports (no clock of the agent compared with ours).
	Set []UpgradeSet `json:"set,omitempty"`
}

// UpgradeSet is one member moved to the new version.
type UpgradeSet struct {
	MemberID string    `json:"member_id"`
	At       time.Time `json:"at"`
	// RunningSince is the StartedAt its agent reported for the process it
	// ran when its version was set (zero: none ran).
	RunningSince time.Time `json:"running_since,omitzero"`
}

// WithSet returns u with s recorded (replacing an earlier record of the
// same member); u itself is not changed.
func (u Upgrade) WithSet(s UpgradeSet) Upgrade {
	out := make([]UpgradeSet, 0, len(u.Set)+1)
	for _, x := range u.Set {
		if x.MemberID != s.MemberID {
			out = append(out, x)
		}
	}
	u.Set = append(out, s)
	return u
}

// SetOf returns the record of member id.
func (u Upgrade) SetOf(id string) (UpgradeSet, bool) {
	i := slices.IndexFunc(u.Set, func(s UpgradeSet) bool { return s.MemberID == id })
	if i < 0 {
		return UpgradeSet{}, false
	}
	return u.Set[i], true
}

// EngineUpgradeRequest asks to move an app's addon to another engine
// version (POST /v1/addons/{id}/engine, addons-upgrade-engine). App must
// own the addon; To is a catalog key ("valkey-8.0.1").
type EngineUpgradeRequest struct {
	App string `json:"app"`
	To  string `json:"to"`
	// MayDiscardData lets the upgrade go on when writes since the last
	// snapshot could be lost (the node does not answer, so SAVE cannot
	// capture them).
	MayDiscardData bool `json:"may_discard_data,omitempty"`
}

// Validate checks the fields that need no state (the version is checked
// against the catalog and the upgrade rules by the coordinator).
func (r *EngineUpgradeRequest) Validate() error {
	if err := ValidateAppName(r.App); err != nil {
		return err
	}
	if r.To == "" {
		return Invalidf("engine version is missing: addons-upgrade-engine --app APP ADDON_ID VERSION, e.g. valkey-8.0.1 (see: cacheplane engines)")
	}
	if len(r.To) > 64 {
		return Invalidf("engine version is longer than 64 characters (see: cacheplane engines)")
	}
	return nil
}

// EngineUpgradeResponse answers addons-upgrade-engine: the addon (status
// updating) and the operation that upgrades it.
type EngineUpgradeResponse struct {
	Addon     Addon     `json:"addon"`
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

// AddonEngineUpgrade moves an app's addon to another engine version.
func (c *Client) AddonEngineUpgrade(ctx context.Context, id string, req EngineUpgradeRequest) (EngineUpgradeResponse, error) {
	var out EngineUpgradeResponse
	return out, c.do(ctx, http.MethodPost, "/v1/addons/"+url.PathEscape(id)+"/engine", req, &out)
}

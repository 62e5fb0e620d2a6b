package api

import (
	"context"
	"net/http"
	"net/url"
)

// PlanChangeRequest asks to move an app's addon to another plan
// (POST /v1/addons/{id}/plan, addons-upgrade). App must own the addon.
type PlanChangeRequest struct {
	App  string `json:"app"`
	Plan string `json:"plan"`
}

// Validate checks the fields that need no state (the plan is checked
// against the catalog by the coordinator).
func (r *PlanChangeRequest) Validate() error {
	if err := ValidateAppName(r.App); err != nil {
		return err
	}
	if r.Plan == "" {
		return Invalidf("plan is missing: addons-upgrade --app APP ADDON_ID PLAN (see: cacheplane addons-plans)")
	}
	if len(r.Plan) > 64 {
		return Invalidf("plan name is longer than 64 characters (see: cacheplane addons-plans)")
	}
	return nil
}

// PlanChangeResponse answers addons-upgrade: the addon (on its new plan,
// status updating) and the operation that resizes it.
type PlanChangeResponse struct {
	Addon     Addon     `json:"addon"`
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

// AppHookEvent is what the fleet's app hook is told after a plan change
// (or an engine upgrade): the webhook's JSON body, and the hook command's
// environment (CACHEPLANE_ADDON_ID, CACHEPLANE_APP, CACHEPLANE_CHANGE,
// REDIS_URL). RedisURL holds the addon's password.
type AppHookEvent struct {
	AddonID     string        `json:"addon_id"`
	App         string        `json:"app"`
	Change      string        `json:"change"`
	RedisURL    string        `json:"redis_url"`
	OperationID string        `json:"operation_id"`
	Kind        OperationKind `json:"kind"`
}

// AddonPlanChange moves an app's addon to another plan.
func (c *Client) AddonPlanChange(ctx context.Context, id string, req PlanChangeRequest) (PlanChangeResponse, error) {
	var out PlanChangeResponse
	return out, c.do(ctx, http.MethodPost, "/v1/addons/"+url.PathEscape(id)+"/plan", req, &out)
}

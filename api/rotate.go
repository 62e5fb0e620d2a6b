package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// OpRotatePassword replaces an addon's app password without a failed
// command: the default user accepts both passwords, the URL changes, the
// app is told, and the old password goes after a grace period (or
// PasswordRotateRequest.Finish).
const OpRotatePassword OperationKind = "rotate-password"

// MaxPasswordGrace bounds a rotation's grace period.
const MaxPasswordGrace = 30 * 24 * time.Hour

// PasswordRotation is what a rotate-password operation records (no
// secret: the passwords are the addon's, api.Addon.NextPassword and
// OldPassword).
type PasswordRotation struct {
	// Grace is how long the old password is still accepted once the new
	// URL is published and the app told.
	Grace Duration `json:"grace"`
	// FinishRequested: an operator asked to end the grace period now
	// (addons-password-rotate --finish).
	FinishRequested bool `json:"finish_requested,omitempty"`
}

// PasswordRotateRequest starts the rotation of an app's addon password
// (POST /v1/addons/{id}/password, addons-password-rotate), or, with
// Finish, ends the grace period of the one running: the old password is
// removed now. App must own the addon. Grace zero means the
// coordinator's default (password_grace).
type PasswordRotateRequest struct {
	App    string   `json:"app"`
	Grace  Duration `json:"grace,omitempty"`
	Finish bool     `json:"finish,omitempty"`
}

// Validate checks the fields that need no state.
func (r *PasswordRotateRequest) Validate() error {
	if err := ValidateAppName(r.App); err != nil {
		return err
	}
	g := time.Duration(r.Grace)
	switch {
	case g < 0:
		return Invalidf("grace %s is negative", g)
	case g > MaxPasswordGrace:
		return Invalidf("grace %s is longer than %s", g, MaxPasswordGrace)
	case r.Finish && g != 0:
		return Invalidf("--grace and --finish do not go together: --finish ends the grace period of the rotation running")
	}
	return nil
}

// PasswordRotateResponse answers addons-password-rotate: the rotation's
// operation and what happens next.
type PasswordRotateResponse struct {
	Operation Operation `json:"operation"`
	Message   string    `json:"message"`
}

// AddonPasswordRotate starts a password rotation, or finishes the one
// running (req.Finish).
func (c *Client) AddonPasswordRotate(ctx context.Context, id string, req PasswordRotateRequest) (PasswordRotateResponse, error) {
	var out PasswordRotateResponse
	return out, c.do(ctx, http.MethodPost, "/v1/addons/"+url.PathEscape(id)+"/password", req, &out)
}

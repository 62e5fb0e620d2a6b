package api

import (
	"context"
	"net/http"
)

// RecoverRequest asks the coordinator behind the admin socket to bring its
// cluster back after losing the majority of its members: it becomes a
// one-member cluster from its own state. Without Confirm (the member's own
// id) nothing changes and the answer says what would happen.
type RecoverRequest struct {
	Confirm string `json:"confirm,omitempty"`
}

// RecoverResponse is the plan of a recovery (Recovered false) or its
// outcome.
type RecoverResponse struct {
	// Member is the id of the member that recovers (or would).
	Member string `json:"member"`
	// Dropped are the other members of the configuration, none of which
	// answered on its Raft or peer address.
	Dropped []CoordinatorMember `json:"dropped"`
	// LastIndex is the last entry of the member's log: every entry up to
	// it is kept (RecoverCluster applies the whole log).
	LastIndex uint64 `json:"last_index"`
	// LastContact is when the member last heard from a leader (RFC 3339;
	// empty: never since it started).
	LastContact string `json:"last_contact,omitempty"`
	Recovered   bool   `json:"recovered"`
	Message     string `json:"message"`
}

// Recover runs (or, without req.Confirm, plans) a quorum-loss recovery on
// the coordinator behind the admin socket. Only the admin socket serves it.
func (c *Client) Recover(ctx context.Context, req RecoverRequest) (RecoverResponse, error) {
	var out RecoverResponse
	return out, c.do(ctx, http.MethodPost, "/v1/cluster/recover", req, &out)
}

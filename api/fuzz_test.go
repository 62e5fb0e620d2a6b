package api

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
)

// FuzzAddonCreateRequest feeds arbitrary bodies through the admin API's
// decoding and validation: it must never panic, and every refusal must be a
// 400 with a one-line message.
func FuzzAddonCreateRequest(f *testing.F) {
	for _, seed := range []string{
		`{"app":"my-app","type":"redis","plan":"redis-starter-256"}`,
		`{"app":"my-app","type":"redis","plan":"redis-business-1024","engine":"valkey"}`,
		`{"app":"my-app","type":"redis","plan":"redis-starter-256","version":"8.0.1","request_id":"abc"}`,
		`{"app":"","type":"","plan":""}`, `[]`, `null`, `{"app":1}`, `{}`, "\x00", `{"app":"a\u0000b"}`,
	} {
		f.Add([]byte(seed))
	}
	plans, engines := DefaultPlans(), DefaultEngines()
	f.Fuzz(func(t *testing.T, body []byte) {
		var req AddonCreateRequest
		err := Decode(bytes.NewReader(body), &req)
		if err == nil {
			err = req.Validate(plans, engines)
		}
		if err == nil {
			if ValidateAppName(req.App) != nil || req.Type != AddonType {
				t.Fatalf("accepted invalid request %+v", req)
			}
			if _, ok := FindPlan(plans, req.Plan); !ok {
				t.Fatalf("accepted unknown plan %q", req.Plan)
			}
			return
		}
		if !errors.Is(err, ErrInvalid) || HTTPStatus(err) != http.StatusBadRequest {
			t.Fatalf("refusal %v is not a 400", err)
		}
		if bytes.ContainsAny([]byte(Message(err)), "\n") && !bytes.ContainsAny(body, "\n") {
			t.Fatalf("message is not one line: %q", Message(err))
		}
	})
}

// FuzzJoinRequest does the same for the cluster join call.
func FuzzJoinRequest(f *testing.F) {
	f.Add([]byte(`{"id":"c2","raft_addr":"127.0.0.2:7400","http_addr":"127.0.0.2:7401"}`))
	f.Add([]byte(`{"id":"","raft_addr":":","http_addr":"x:99999"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req JoinRequest
		err := Decode(bytes.NewReader(body), &req)
		if err == nil {
			err = req.Validate()
		}
		if err != nil && HTTPStatus(err) != http.StatusBadRequest {
			t.Fatalf("refusal %v is not a 400", err)
		}
	})
}

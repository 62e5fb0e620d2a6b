package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestValidateAppName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"my-app", true}, {"abc", true}, {"a1-b2-c3", true}, {strings.Repeat("a", 48), true},
		{"", false}, {"ab", false}, {strings.Repeat("a", 49), false}, {"My-App", false}, {"my_app", false},
		{"-app", false}, {"app-", false}, {"1app", false}, {"my--app", false}, {"my app", false}, {"app\n", false},
	}
	for _, tt := range tests {
		err := ValidateAppName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateAppName(%q) = %v; want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateAppName(%q) error does not wrap ErrInvalid", tt.name)
		}
	}
}

func TestAddonCreateValidate(t *testing.T) {
	plans, engines := DefaultPlans(), DefaultEngines()
	tests := []struct {
		name        string
		req         AddonCreateRequest
		wantErr     string // substring; empty = valid
		wantEngine  Engine
		wantVersion string
	}{
		{"default engine", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-starter-256"}, "", EngineRedis, "7.0.15"},
		{"valkey by engine: its newest version", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-business-1024", Engine: EngineValkey}, "", EngineValkey, "8.1.1"},
		{"redis by engine: its newest version", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-business-1024", Engine: EngineRedis}, "", EngineRedis, "8.0.2"},
		{"version only", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-starter-256", Version: "8.0.1"}, "", EngineValkey, "8.0.1"},
		{"unknown plan lists plans", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-huge"}, `unknown plan "redis-huge"; valid plans: redis-starter-256, redis-starter-512`, "", ""},
		{"missing plan", AddonCreateRequest{App: "my-app", Type: "redis"}, "plan is missing; valid plans:", "", ""},
		{"missing app", AddonCreateRequest{Type: "redis", Plan: "redis-starter-256"}, "app name is missing", "", ""},
		{"bad app", AddonCreateRequest{App: "Bad", Type: "redis", Plan: "redis-starter-256"}, "malformed", "", ""},
		{"missing type", AddonCreateRequest{App: "my-app", Plan: "redis-starter-256"}, "addon type is missing", "", ""},
		{"other type", AddonCreateRequest{App: "my-app", Type: "postgresql", Plan: "redis-starter-256"}, `unknown addon type "postgresql"`, "", ""},
		{"unknown version", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-starter-256", Engine: EngineRedis, Version: "6.2"}, `unknown engine version "redis-6.2"; available: redis-7.0.15, redis-8.0.2, valkey-8.0.1, valkey-8.1.1`, "", ""},
		{"bad request id", AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-starter-256", RequestID: "a b"}, "request id", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			err := req.Validate(plans, engines)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if req.Engine != tt.wantEngine || req.Version != tt.wantVersion {
					t.Fatalf("resolved %s %s; want %s %s", req.Engine, req.Version, tt.wantEngine, tt.wantVersion)
				}
				return
			}
			if err == nil || !strings.Contains(Message(err), tt.wantErr) {
				t.Fatalf("error = %v; want it to contain %q", err, tt.wantErr)
			}
			if HTTPStatus(err) != http.StatusBadRequest {
				t.Fatalf("status = %d; want 400", HTTPStatus(err))
			}
			if strings.Contains(Message(err), "\n") {
				t.Fatalf("message is not one line: %q", Message(err))
			}
		})
	}
}

func TestValidateHostPort(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7400": true, "[::1]:80": true, "host:1": true,
		"": false, "127.0.0.1": false, ":80": false, "h:": false, "h:0": false, "h:65536": false, "h:08": false, "h:x": false,
	} {
		if err := ValidateHostPort("addr", addr); (err == nil) != ok {
			t.Errorf("ValidateHostPort(%q) = %v; want ok=%v", addr, err, ok)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{``, "empty"},
		{`   `, "empty"},
		{`{"app":"x"} {}`, "after the JSON object"},
		{`{"app": 1}`, "not valid JSON"},
		{`{"app":"x","nope":1}`, "unknown field"},
		{strings.Repeat(" ", MaxRequestBytes+1), "larger than"},
	}
	for _, tt := range tests {
		var req AddonCreateRequest
		err := Decode(strings.NewReader(tt.body), &req)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%.20q) = %v; want ErrInvalid containing %q", tt.body, err, tt.want)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
	}{
		{Invalidf("x"), 400}, {ErrNotFound, 404}, {ErrConflict, 409}, {ErrPlanTooSmall, 422},
		{ErrNoCapacity, 422}, {ErrNotLeader, 503}, {ErrNoLeader, 503}, {ErrUnauthorized, 401},
		{errors.New("boom"), 500},
	} {
		if got := HTTPStatus(tt.err); got != tt.status {
			t.Errorf("HTTPStatus(%v) = %d; want %d", tt.err, got, tt.status)
		}
		// The code survives the wire: a RemoteError unwraps to the sentinel.
		re := &RemoteError{Status: tt.status, Code: ErrorCode(tt.err), Message: "m"}
		if HTTPStatus(re) != tt.status {
			t.Errorf("remote error for %v maps to %d", tt.err, HTTPStatus(re))
		}
	}
}

func TestDefaultPlansAreValid(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range DefaultPlans() {
		if seen[p.Name] {
			t.Fatalf("duplicate plan %s", p.Name)
		}
		seen[p.Name] = true
		if p.MemoryMB <= 0 || (p.Kind != PlanStarter && p.Kind != PlanBusiness) {
			t.Fatalf("bad plan %+v", p)
		}
	}
	if !seen["redis-starter-256"] || !seen["redis-business-1024"] {
		t.Fatal("catalog lacks the plans named in the docs")
	}
}

// TestCheckEntrypointTLS: the kernel entrypoint forwards to redis's port
// as it is: force TLS needs member TLS there, and member TLS needs force
// TLS; the haproxy entrypoint takes every combination.
func TestCheckEntrypointTLS(t *testing.T) {
	for _, c := range []struct {
		mode                string
		force, member, fail bool
	}{
		{EntrypointHAProxy, false, false, false},
		{EntrypointHAProxy, true, false, false},
		{EntrypointHAProxy, false, true, false},
		{EntrypointHAProxy, true, true, false},
		{EntrypointKernel, false, false, false},
		{EntrypointKernel, true, false, true},
		{EntrypointKernel, false, true, true},
		{EntrypointKernel, true, true, false},
	} {
		err := CheckEntrypointTLS(Settings{Entrypoint: c.mode, ForceTLS: c.force, MemberTLS: c.member})
		if (err != nil) != c.fail || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s force %v member %v: err %v, want failure %v", c.mode, c.force, c.member, err, c.fail)
		}
	}
	// addons-settings keeps member TLS (it has no switch for it) and
	// applies the same rule.
	off := false
	r := SettingsRequest{App: "my-app", ForceTLS: &off}
	if _, err := r.Apply(Settings{Entrypoint: EntrypointKernel, ForceTLS: true, MemberTLS: true}); err == nil {
		t.Error("force TLS off allowed for a kernel-mode addon with member TLS")
	}
	on := true
	r = SettingsRequest{App: "my-app", CacheMode: &on}
	got, err := r.Apply(Settings{MemberTLS: true})
	if err != nil || !got.MemberTLS {
		t.Errorf("a settings change dropped member TLS: %+v, %v", got, err)
	}
}

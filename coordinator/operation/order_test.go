package operation

import (
	"reflect"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func TestOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	op := func(id string, kind api.OperationKind, s int) api.Operation {
		return api.Operation{ID: id, Kind: kind, CreatedAt: t0.Add(time.Duration(s) * time.Second)}
	}
	// Oldest first, as the engine sorts them: a backlog of provisions
	// with a replace created last (a host lost behind them).
	ops := []api.Operation{
		op("p1", api.OpProvision, 1), op("p2", api.OpProvision, 2), op("c3", api.OpPlanChange, 3),
		op("p4", api.OpProvision, 4), op("r5", api.OpReplaceMember, 5), op("p6", api.OpProvision, 6), op("r7", api.OpReplaceMember, 7),
	}
	ids := func(ops []api.Operation) []string {
		var out []string
		for _, o := range ops {
			out = append(out, o.ID)
		}
		return out
	}
	tests := []struct {
		name   string
		resume Cursor
		want   []string
	}{
		{"healing first, then the rest oldest first", Cursor{}, []string{"r5", "r7", "p1", "p2", "c3", "p4", "p6"}},
		{"resume where the budget ran out; the head after", CursorOf(ops[3]), []string{"r5", "r7", "p4", "p6", "p1", "p2", "c3"}},
		{"a resume point that finished since: the next one on", Cursor{CreatedAt: t0.Add(3500 * time.Millisecond), ID: "gone"}, []string{"r5", "r7", "p4", "p6", "p1", "p2", "c3"}},
		{"same creation time: by id", Cursor{CreatedAt: t0.Add(2 * time.Second), ID: "p1"}, []string{"r5", "r7", "p2", "c3", "p4", "p6", "p1"}},
		{"resume past the end: from the head", Cursor{CreatedAt: t0.Add(time.Hour), ID: "x"}, []string{"r5", "r7", "p1", "p2", "c3", "p4", "p6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := ids(ops)
			if got := ids(Order(ops, tc.resume)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Order = %v; want %v", got, tc.want)
			}
			if !reflect.DeepEqual(ids(ops), before) {
				t.Fatal("Order modified its input")
			}
		})
	}
	if !Urgent(op("r", api.OpReplaceMember, 0)) || Urgent(op("p", api.OpProvision, 0)) {
		t.Fatal("Urgent: replace-member only")
	}
}

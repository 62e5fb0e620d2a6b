package operation

import (
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Cursor marks an operation's place in the engine's order (oldest first,
// then by id): where a pass whose budget ran out stopped.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// CursorOf is op's place.
func CursorOf(op api.Operation) Cursor { return Cursor{CreatedAt: op.CreatedAt, ID: op.ID} }

// IsZero: no place (the previous pass went through every operation).
func (c Cursor) IsZero() bool { return c.ID == "" && c.CreatedAt.IsZero() }

// before reports whether op comes before c in the engine's order.
func (c Cursor) before(op api.Operation) bool {
	if !op.CreatedAt.Equal(c.CreatedAt) {
		return op.CreatedAt.Before(c.CreatedAt)
	}
	return op.ID < c.ID
}

// Urgent reports whether op goes ahead of every other operation and past
// a pass's budget: healing (replace-member, the host-loss and drain moves),
// which must never wait behind a backlog of provisions or plan changes.
func Urgent(op api.Operation) bool { return op.Kind == api.OpReplaceMember }

// Order is the order one pass of the engine considers the active
// operations in; ops are oldest first (then by id). Urgent ones come
// first, in that order; then the others from resume on (where the previous
// pass stopped when its budget ran out), then those before resume, so the
// tail of a large backlog is reached as surely as its head. ops is not
// modified.
func Order(ops []api.Operation, resume Cursor) []api.Operation {
	out := make([]api.Operation, 0, len(ops))
	for _, op := range ops {
		if Urgent(op) {
			out = append(out, op)
		}
	}
	for _, op := range ops {
		if !Urgent(op) && (resume.IsZero() || !resume.before(op)) {
			out = append(out, op)
		}
	}
	for _, op := range ops {
		if !Urgent(op) && !resume.IsZero() && resume.before(op) {
			out = append(out, op)
		}
	}
	return out
}

package coordinator

import (
	"reflect"
	"testing"
)

// TestShallowCopyCoversEveryField: a snapshot is encoded from
// State.shallowCopy while later entries apply, so every serialized field
// must be in the copy, and every map must be a map of its own (a new
// field of State forgotten there fails here).
func TestShallowCopyCoversEveryField(t *testing.T) {
	s := newState()
	s.Version = 7
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		switch f.Kind() {
		case reflect.Map:
			if f.IsNil() {
				f.Set(reflect.MakeMap(f.Type()))
			}
			f.SetMapIndex(reflect.New(f.Type().Key()).Elem(), reflect.New(f.Type().Elem()).Elem())
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		}
	}
	c := reflect.ValueOf(s.shallowCopy()).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if !v.Type().Field(i).IsExported() {
			continue
		}
		a, b := v.Field(i), c.Field(i)
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("%s: not copied", name)
		}
		if a.Kind() == reflect.Map && a.UnsafePointer() == b.UnsafePointer() {
			t.Errorf("%s: the copy shares the map", name)
		}
	}
}

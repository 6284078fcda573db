package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"berth.dev/berth/nodes/api"
)

// decodeBody decodes the request's JSON body into v strictly: one
// document, no unknown fields, no trailing data, at most s.maxBody bytes.
// Its errors wrap api.ErrInvalid and say what is wrong where.
func (s *server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return fmt.Errorf("%w: content type %q: the body must be application/json", api.ErrInvalid, ct)
		}
	}
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s", api.ErrInvalid, describeDecodeError(err, dec))
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil || isSyntaxError(err) {
			return fmt.Errorf("%w: data after the JSON document at byte %d", api.ErrInvalid, dec.InputOffset())
		}
		return fmt.Errorf("%w: %s", api.ErrInvalid, describeDecodeError(err, dec))
	}
	return nil
}

func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

func describeDecodeError(err error, dec *json.Decoder) string {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return fmt.Sprintf("request body larger than %d bytes", tooLarge.Limit)
	case err == io.EOF:
		return "empty request body: a JSON document is required"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("truncated JSON at byte %d", dec.InputOffset())
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("expected %s, found a JSON %s", typ.Type, typ.Value)
		}
		return fmt.Sprintf("field %q: expected %s, found a JSON %s", typ.Field, typ.Type, typ.Value)
	}
	// Unknown fields ("json: unknown field \"x\""), and the errors of
	// fields that decode themselves (quantities, base64).
	return strings.TrimPrefix(err.Error(), "json: ")
}

// noQuery rejects a query on a route that takes none.
func noQuery(r *http.Request) error {
	q, err := newQuery(r)
	if err != nil {
		return err
	}
	return q.finish()
}

// query reads a request's query parameters strictly: each accessor marks
// its parameter as known, and finish rejects malformed values, repeated
// single parameters and unknown ones.
type query struct {
	values url.Values
	known  map[string]bool
	err    error
}

func newQuery(r *http.Request) (*query, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed query: %v", api.ErrInvalid, err)
	}
	return &query{values: v, known: map[string]bool{}}, nil
}

func (q *query) fail(name, format string, args ...any) {
	if q.err == nil {
		q.err = fmt.Errorf("%w: query parameter %q: %s", api.ErrInvalid, name, fmt.Sprintf(format, args...))
	}
}

// one returns the parameter's single value ("" when absent).
func (q *query) one(name string) string {
	q.known[name] = true
	vs := q.values[name]
	if len(vs) > 1 {
		q.fail(name, "given %d times, once at most", len(vs))
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func (q *query) list(name string) []string {
	q.known[name] = true
	return q.values[name]
}

func (q *query) str(name string) string { return q.one(name) }

func (q *query) bool(name string) bool {
	v := q.one(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		q.fail(name, "%q is not a boolean (true or false)", v)
	}
	return b
}

// int returns a non-negative integer parameter, and whether it was given.
func (q *query) int(name string) (int, bool) {
	v := q.one(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		q.fail(name, "%q is not a non-negative integer", v)
		return 0, false
	}
	return n, true
}

func (q *query) time(name string) time.Time {
	v := q.one(name)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		q.fail(name, "%q is not an RFC 3339 time (2006-01-02T15:04:05Z)", v)
	}
	return t
}

func (q *query) finish() error {
	if q.err != nil {
		return q.err
	}
	var unknown []string
	for name := range q.values {
		if !q.known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("%w: unknown query parameter %q", api.ErrInvalid, strings.Join(unknown, ", "))
	}
	return nil
}

package httpapi

import (
	"fmt"
	"mime"
	"net/http"

	"berth.dev/berth/nodes/api"
)

// Archive content types POST /v1/images/import takes.
const (
	ContentTypeTar         = "application/x-tar"
	ContentTypeOctetStream = "application/octet-stream"
)

// importResult is the answer of POST /v1/images/import.
type importResult struct {
	Images []api.Image `json:"images"`
}

// importImages takes a raw OCI (or docker save) archive as the body. The
// body is not bounded by MaxBodyBytes: the backend bounds the archive.
func (s *server) importImages(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != ContentTypeTar && mt != ContentTypeOctetStream) {
			s.writeError(w, r, fmt.Errorf("%w: content type %q: the body must be an image archive, %s or %s",
				api.ErrInvalid, ct, ContentTypeTar, ContentTypeOctetStream))
			return
		}
	}
	imgs, err := s.b.ImportImages(r.Context(), r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if imgs == nil {
		imgs = []api.Image{}
	}
	writeJSON(w, http.StatusOK, importResult{Images: imgs})
}

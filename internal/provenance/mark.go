// Package provenance tells a copy kmirror made from any other record.
//
// A flow with provenance on writes every record with the header
// kmirror.provenance (a Mark): the flow that wrote the copy, and the Kafka
// cluster IDs of the clusters the record was written to, origin first. A
// header alone proves nothing: Kafka Streams and many other pipelines
// forward the headers of their input records to the records they derive,
// and anyone can write one. So a flow that reads a record with a mark asks
// the Ledger of its source cluster whether the flow the mark names really
// wrote a record at that offset: every flow stores the exact offsets of its
// copies (the runs of its offset map) in its progress topic on its target,
// before it stores the position that passes them, and an offset of a
// partition holds one record only. A record at an offset the named flow
// did not write is not a copy, whatever its header says.
//
// A proven mark's path is what that flow wrote, and the flow built it from
// a record it had proven the same way (or that carried no proven mark:
// then the path starts at that flow's source). So the whole path of a
// proven mark is true, hop by hop.
package provenance

import (
	"strings"
)

// Header is the record header that carries a Mark.
const Header = "kmirror.provenance"

// version2 starts the value of a mark written by this version:
// "2;<flow>;<cluster IDs, comma-separated>[;<source topic>]".
const version2 = "2;"

// Mark is the provenance header of a record.
type Mark struct {
	// Writer is the flow that says it wrote the record, or "" in a mark of
	// the older format, which names no flow (Legacy).
	Writer string
	// Path holds the cluster IDs of the clusters the record was written
	// to, origin first; the last is the cluster the record is on.
	Path []string
	// SourceTopic is the topic on the writer's source that the record was
	// copied from, when it is not the topic the record is in (a flow that
	// renames topics).
	SourceTopic string
	// Legacy says the mark is of the older format: a bare path.
	Legacy bool
}

// Origin is the cluster ID the record was first written to.
func (m Mark) Origin() string { return m.Path[0] }

// Has reports whether cluster id is on the mark's path.
func (m Mark) Has(id string) bool {
	for _, p := range m.Path {
		if p == id {
			return true
		}
	}
	return false
}

// Parse decodes a provenance header value; false if it holds no mark
// (empty, or not in either format).
func Parse(v []byte) (Mark, bool) {
	if len(v) == 0 {
		return Mark{}, false
	}
	s := string(v)
	if !strings.HasPrefix(s, version2) {
		if strings.ContainsAny(s, ";") {
			return Mark{}, false
		}
		path := strings.Split(s, ",")
		if !validPath(path) {
			return Mark{}, false
		}
		return Mark{Path: path, Legacy: true}, true
	}
	fields := strings.Split(s[len(version2):], ";")
	if len(fields) < 2 || len(fields) > 3 || fields[0] == "" {
		return Mark{}, false
	}
	m := Mark{Writer: fields[0], Path: strings.Split(fields[1], ",")}
	if !validPath(m.Path) {
		return Mark{}, false
	}
	if len(fields) == 3 {
		if fields[2] == "" {
			return Mark{}, false
		}
		m.SourceTopic = fields[2]
	}
	return m, true
}

func validPath(path []string) bool {
	for _, id := range path {
		if id == "" {
			return false
		}
	}
	return len(path) > 0
}

// Encode returns the header value of m, in the current format.
func (m Mark) Encode() []byte {
	n := len(version2) + len(m.Writer) + 1 + len(m.SourceTopic) + 1
	for _, id := range m.Path {
		n += len(id) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, version2...)
	b = append(b, m.Writer...)
	b = append(b, ';')
	for i, id := range m.Path {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, id...)
	}
	if m.SourceTopic != "" {
		b = append(b, ';')
		b = append(b, m.SourceTopic...)
	}
	return b
}

// MaxHeaderBytes bounds the size of a provenance header written by a flow
// named flow (at most 100 characters), with hops clusters on its path and
// a source topic name of at most 249 characters: key and value, plus the
// record encoding's length fields.
func MaxHeaderBytes(hops int) int {
	const clusterID = 64 // Kafka's are 22; a broker may report a longer one
	return len(Header) + len(version2) + 100 + 1 + hops*(clusterID+1) + 1 + 249 + 2*5
}

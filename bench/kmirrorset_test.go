package main

import "testing"

func TestKmirrorClientYAML(t *testing.T) {
	want := `    producer:
      compression: lz4
      linger: 5ms
      batch_max_bytes: 1048576
      max_buffered_bytes: 268435456
      acks: all
    consumer:
      fetch_max_bytes: 52428800
      fetch_max_partition_bytes: 10485760
      isolation_level: read_uncommitted
`
	if got := kmirrorClientYAML("read_uncommitted"); got != want {
		t.Errorf("bench values:\n%s\nwant\n%s", got, want)
	}
	set, err := parseKmirrorSet("consumer.fetch_max_bytes=default,consumer.fetch_max_partition_bytes=default,producer.batch_max_bytes=4194304")
	if err != nil {
		t.Fatal(err)
	}
	want = `    producer:
      compression: lz4
      linger: 5ms
      batch_max_bytes: 4194304
      max_buffered_bytes: 268435456
      acks: all
    consumer:
      isolation_level: read_committed
`
	if got := kmirrorClientYAML("read_committed", set); got != want {
		t.Errorf("with %v:\n%s\nwant\n%s", set, got, want)
	}
	for _, bad := range []string{"producer.acks", "nope=1", "consumer.isolation_level=read_committed"} {
		if _, err := parseKmirrorSet(bad); err == nil {
			t.Errorf("parseKmirrorSet(%q) accepted", bad)
		}
	}
}

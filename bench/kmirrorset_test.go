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

func TestParseKmirrorVariants(t *testing.T) {
	vs, err := parseKmirrorVariants("own:consumer.fetch_max_bytes=default; big:producer.batch_max_bytes=4194304,producer.linger=20ms")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].name != "own" || vs[0].set["consumer.fetch_max_bytes"] != "default" ||
		vs[1].name != "big" || vs[1].set["producer.batch_max_bytes"] != "4194304" || vs[1].set["producer.linger"] != "20ms" {
		t.Errorf("parsed %+v", vs)
	}
	for _, bad := range []string{"producer.linger=20ms", "a:producer.linger=1ms;a:producer.linger=2ms", "b c:producer.linger=1ms"} {
		if _, err := parseKmirrorVariants(bad); err == nil {
			t.Errorf("parseKmirrorVariants(%q) accepted", bad)
		}
	}
}

package flow

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

// TestHangingTxns: a transaction open on a partition is hanging when no
// coordinator holds a transaction of its producer (none lists it, or the
// one that does completed it: its marker was not written there), and not
// while a coordinator has it ongoing or is ending it.
func TestHangingTxns(t *testing.T) {
	open := func(part int32, pid int64, start int64) kadm.DescribedProducer {
		return kadm.DescribedProducer{Topic: "p", Partition: part, ProducerID: pid, ProducerEpoch: 3, CurrentTxnStartOffset: start}
	}
	producers := []kadm.DescribedProducer{
		open(0, 1, 5),  // completed by its coordinator: hanging
		open(0, 2, 7),  // ongoing
		open(0, 3, 9),  // listed by no coordinator: hanging
		open(1, 4, 2),  // being committed
		open(1, 5, -1), // no transaction open
		open(1, 6, 11), // being aborted
		open(2, 7, 0),  // empty (its transactional ID was initialised again): hanging
	}
	txns := kadm.ListedTransactions{
		"a": {TxnID: "a", ProducerID: 1, State: "CompleteCommit"},
		"b": {TxnID: "b", ProducerID: 2, State: "Ongoing"},
		"d": {TxnID: "d", ProducerID: 4, State: "PrepareCommit"},
		"e": {TxnID: "e", ProducerID: 5, State: "CompleteAbort"},
		"f": {TxnID: "f", ProducerID: 6, State: "PrepareAbort"},
		"g": {TxnID: "g", ProducerID: 7, State: "Empty"},
	}
	got := hangingTxns(producers, txns)
	want := []hangingTxn{
		{Partition: 0, ProducerID: 1, Epoch: 3, StartOffset: 5, TxnID: "a", State: "CompleteCommit"},
		{Partition: 0, ProducerID: 3, Epoch: 3, StartOffset: 9},
		{Partition: 2, ProducerID: 7, Epoch: 3, StartOffset: 0, TxnID: "g", State: "Empty"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hanging transactions:\n got %+v\nwant %+v", got, want)
	}
}

// TestFindHangingTxns: on a fake cluster, a transaction open on the
// progress topic is not hanging while its coordinator has it ongoing, and
// is once the coordinators list its producer's transaction as completed
// (as a Kafka 4.x coordinator does after writing no marker to a partition
// it found without a leader).
func TestFindHangingTxns(t *testing.T) {
	const topic = "__kmirror.f.progress"
	c := kfaketest.Cluster(t, kfake.SeedTopics(1, topic))
	admin := kfaketest.Client(t, c)
	txn := kfaketest.Client(t, c, kgo.TransactionalID("f-txn"), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if h, err := findHangingTxns(ctx, admin, topic); err != nil || len(h) != 0 {
		t.Fatalf("nothing open: got %+v, %v", h, err)
	}
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, kgo.StringRecord("position")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if h, err := findHangingTxns(ctx, admin, topic); err != nil || len(h) != 0 {
		t.Fatalf("a transaction its coordinator has ongoing: got %+v, %v", h, err)
	}
	pid, _, err := txn.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.ControlKey(kmsg.ListTransactions.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.ListTransactionsRequest).ResponseKind().(*kmsg.ListTransactionsResponse)
		st := kmsg.NewListTransactionsResponseTransactionState()
		st.TransactionalID, st.ProducerID, st.TransactionState = "f-txn", pid, "CompleteCommit"
		resp.TransactionStates = append(resp.TransactionStates, st)
		return resp, nil, true
	})
	h, err := findHangingTxns(ctx, admin, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := []hangingTxn{{Partition: 0, ProducerID: pid, StartOffset: 0, TxnID: "f-txn", State: "CompleteCommit"}}
	if len(h) == 1 {
		want[0].Epoch = h[0].Epoch
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("a transaction its coordinator completed: got %+v, want %+v", h, want)
	}
}

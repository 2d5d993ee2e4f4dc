//! The test servers themselves must work before other tests rely on them.

use soma_testkit::MotoServer;

#[test]
fn moto_server_starts_and_stores_objects() {
    let moto = MotoServer::start();
    moto.create_bucket("probe");
    moto.put_object("probe", "a/b.txt", b"hello");
    moto.delete_object("probe", "a/b.txt");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}

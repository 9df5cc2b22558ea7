//! `karen doc import` (through the library function the command calls), on
//! both backends: supported files go through the same document service as
//! the API; unsupported ones are skipped and unreadable ones refused, each
//! with its reason, leaving nothing of them behind.

use karen::maintenance::{FileOutcome, ImportOptions, import_documents};
use karen_app::memory::NoProgress;
use karen_testkit::{Backend, spawn};
use serde_json::json;

/// A scratch directory of files to import.
fn directory() -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write(
        "onboarding.md",
        b"# Onboarding\n\nBadges are issued by the front desk on your first day.",
    );
    write("notes.txt", b"The cafeteria closes at three on Fridays.");
    write("photo.png", b"\x89PNG\r\n\x1a\n not really");
    write("broken.pdf", b"%PDF-1.7\nthis is not a PDF at all");
    write("empty.txt", b"   \n  ");
    write(".hidden.md", b"# Hidden\n\nNever imported.");
    write(
        "finance/payroll.html",
        b"<html><head><title>Payroll</title></head><body><p>Salaries are paid on the 25th.</p></body></html>",
    );
    dir
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir()
                .join(format!("karen-import-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn outcome_of<'a>(report: &'a karen::maintenance::ImportReport, name: &str) -> &'a FileOutcome {
    &report
        .files
        .iter()
        .find(|(path, _)| path.ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in the report: {report:?}"))
        .1
}

async fn import_stores_supported_files_and_refuses_the_rest(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let (member_id, member) = app.create_user(&acme, "ada@acme.test", &["member"]).await;
    let dir = directory();
    let options = ImportOptions {
        dir: dir.path().to_path_buf(),
        tenant: "acme".into(),
        user: Some("ada@acme.test".into()),
        ..ImportOptions::default()
    };
    let report = import_documents(&app.karen, &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (report.imported(), report.failed(), report.skipped()),
        (2, 2, 1),
        "{report:?}"
    );
    assert!(matches!(
        outcome_of(&report, "onboarding.md"),
        FileOutcome::Imported { chunks: 1.., .. }
    ));
    assert!(
        matches!(outcome_of(&report, "photo.png"), FileOutcome::Skipped(r) if r.contains("not a supported"))
    );
    assert!(
        matches!(outcome_of(&report, "broken.pdf"), FileOutcome::Failed(r) if r.contains("PDF")),
        "{report:?}"
    );
    assert!(
        matches!(outcome_of(&report, "empty.txt"), FileOutcome::Failed(r) if r.contains("no text"))
    );
    assert!(
        !report
            .files
            .iter()
            .any(|(p, _)| p.ends_with(".hidden.md") || p.ends_with("payroll.html")),
        "hidden files and subdirectories (without --recursive) are left alone"
    );

    // Exactly the imported documents exist, searchable like uploads, with
    // their uploader recorded; the refused left nothing in any index.
    let listed = app.get("/v1/documents", &member).await;
    let listed = listed.expect(200);
    assert_eq!(listed.item_ids().len(), 2, "{}", listed.text);
    assert!(
        listed.text.contains(&member_id.to_string()),
        "{}",
        listed.text
    );
    let found = app
        .post(
            "/v1/search",
            &member,
            json!({"query": "who issues badges?"}),
        )
        .await;
    assert!(found.expect(200).text.contains("front desk"));
    let checked = karen::maintenance::check(&app.karen, Some("acme"), false, &NoProgress)
        .await
        .unwrap();
    assert!(checked[0].1.is_clean(), "{:?}", checked[0].1);

    // Recursively, restricted to a role: the member cannot read it.
    let options = ImportOptions {
        dir: dir.path().join("finance"),
        tenant: "acme".into(),
        roles: vec!["finance".into()],
        recursive: true,
        user: None,
    };
    let report = import_documents(&app.karen, &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.imported(), 1, "{report:?}");
    let found = app
        .post("/v1/search", &member, json!({"query": "salaries paid"}))
        .await;
    assert!(!found.expect(200).text.contains("25th"));
    let listed = app.get("/v1/documents", &acme.owner_token).await;
    let listed = listed.expect(200);
    let payroll = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["title"] == "Payroll")
        .unwrap();
    assert_eq!(payroll["access_roles"], json!(["finance"]));
    assert!(payroll["uploaded_by"].is_null(), "imported by the platform");

    // A tenant or user that does not exist stops the import before any file.
    let unknown_user = ImportOptions {
        dir: dir.path().to_path_buf(),
        tenant: "acme".into(),
        user: Some("nobody@acme.test".into()),
        ..ImportOptions::default()
    };
    assert!(
        import_documents(&app.karen, &unknown_user, &NoProgress)
            .await
            .is_err()
    );
    let unknown_tenant = ImportOptions {
        dir: dir.path().to_path_buf(),
        tenant: "nosuch".into(),
        ..ImportOptions::default()
    };
    assert!(
        import_documents(&app.karen, &unknown_tenant, &NoProgress)
            .await
            .is_err()
    );
    let listed = app.get("/v1/documents", &acme.owner_token).await;
    assert_eq!(listed.expect(200).item_ids().len(), 3);
    app.stop().await;
}

on_both_backends!(import_stores_supported_files_and_refuses_the_rest);

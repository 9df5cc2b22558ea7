//! PDF fixtures are built here with lopdf's writer: no binary file is committed.

use karen_docs::{DocumentParser, ExtractionLimits};
use karen_domain::documents::{DocumentExtractor, DocumentFormat};
use lopdf::content::{Content, Operation};
use lopdf::{
    Document, EncryptionState, EncryptionVersion, Object, Permissions, Stream, dictionary,
};

use crate::{extract, paragraph, refusal};

/// A PDF whose pages run the given content operations, with Helvetica as /F1.
fn build(pages: Vec<Vec<Operation>>, title: Option<&str>) -> Document {
    let mut document = Document::with_version("1.5");
    let pages_id = document.new_object_id();
    let font_id = document.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = document.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids: Vec<Object> = Vec::new();
    for operations in pages {
        let content = Content { operations }.encode().unwrap();
        let content_id = document.add_object(Stream::new(dictionary! {}, content));
        let page_id = document.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = document.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    document.trailer.set("Root", catalog_id);
    let file_id = Object::string_literal(b"karen-test-file-id".to_vec());
    document.trailer.set("ID", vec![file_id.clone(), file_id]);
    if let Some(title) = title {
        let info_id = document.add_object(dictionary! { "Title" => lopdf::text_string(title) });
        document.trailer.set("Info", info_id);
    }
    document
}

fn save(mut document: Document) -> Vec<u8> {
    let mut bytes = Vec::new();
    document.save_to(&mut bytes).unwrap();
    bytes
}

fn op(operator: &str, operands: Vec<Object>) -> Operation {
    Operation::new(operator, operands)
}

fn string(text: &str) -> Object {
    Object::string_literal(text)
}

/// Lines of 12-point text, 14 points apart; an empty line leaves a paragraph gap.
fn lines(lines: &[&str]) -> Vec<Operation> {
    let mut operations = vec![
        op("BT", vec![]),
        op("Tf", vec!["F1".into(), 12.into()]),
        op("Td", vec![72.into(), 760.into()]),
    ];
    let mut gap = 0;
    for (index, line) in lines.iter().enumerate() {
        if line.is_empty() {
            gap += 14;
            continue;
        }
        if index > 0 {
            operations.push(op("Td", vec![0.into(), (-14 - gap).into()]));
        }
        gap = 0;
        operations.push(op("Tj", vec![string(line)]));
    }
    operations.push(op("ET", vec![]));
    operations
}

/// A page of text set as word processors do: absolute `Tm` positions, `TJ`
/// arrays with kerning and word gaps, and the `'` operator.
fn typeset_page() -> Vec<Operation> {
    vec![
        op("BT", vec![]),
        op("Tf", vec!["F1".into(), 1.into()]),
        op(
            "Tm",
            vec![
                11.into(),
                0.into(),
                0.into(),
                11.into(),
                72.into(),
                700.into(),
            ],
        ),
        op(
            "TJ",
            vec![
                vec![
                    string("Ker"),
                    (-20).into(),
                    string("ning"),
                    (-300).into(),
                    string("matters."),
                ]
                .into(),
            ],
        ),
        op(
            "Tm",
            vec![
                11.into(),
                0.into(),
                0.into(),
                11.into(),
                72.into(),
                687.into(),
            ],
        ),
        op("Tj", vec![string("Same paragraph,")]),
        op(
            "Tm",
            vec![
                11.into(),
                0.into(),
                0.into(),
                11.into(),
                160.into(),
                687.into(),
            ],
        ),
        op("Tj", vec![string("same line.")]),
        op("TL", vec![Object::Real(2.5)]),
        op("'", vec![string("A new paragraph after a gap.")]),
        op("ET", vec![]),
        op("m", vec![0.into(), 0.into()]),
        op("l", vec![100.into(), 100.into()]),
        op("S", vec![]),
    ]
}

fn report() -> Vec<u8> {
    let mut document = build(
        vec![
            lines(&[
                "Annual Report 2026",
                "",
                "Revenue grew strongly",
                "in every region.",
                "",
                "Costs fell.",
            ]),
            typeset_page(),
        ],
        Some("Rapport annuel — été"),
    );
    document.compress();
    save(document)
}

#[test]
fn the_text_layer_becomes_paragraphs_and_the_title_comes_from_the_info() {
    let document = extract(DocumentFormat::Pdf, &report());
    assert_eq!(document.title.as_deref(), Some("Rapport annuel — été"));
    assert_eq!(
        document.blocks,
        vec![
            paragraph("Annual Report 2026"),
            paragraph("Revenue grew strongly in every region."),
            paragraph("Costs fell."),
            paragraph("Kerning matters. Same paragraph, same line."),
            paragraph("A new paragraph after a gap."),
        ]
    );
}

/// A character map as PDF producers embed for subset fonts: codes to Unicode.
const TO_UNICODE: &str = "/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CMapName /Karen-Test def /CMapType 2 def
1 begincodespacerange <00> <FF> endcodespacerange
4 beginbfchar <01> <0048> <02> <0069> <03> <00E9> <04> <65E5> endbfchar
endcmap CMapName currentdict /CMap defineresource pop end end";

#[test]
fn fonts_with_a_unicode_map_are_decoded() {
    let mut document = build(vec![], None);
    let map_id = document.add_object(Stream::new(dictionary! {}, TO_UNICODE.as_bytes().to_vec()));
    let font_id = document.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "TrueType",
        "BaseFont" => "ABCDEF+Subset",
        "ToUnicode" => map_id,
    });
    let operations = vec![
        op("BT", vec![]),
        op("Tf", vec!["F2".into(), 12.into()]),
        op("Td", vec![72.into(), 700.into()]),
        op(
            "Tj",
            vec![Object::String(
                vec![1, 2, 3, 4],
                lopdf::StringFormat::Hexadecimal,
            )],
        ),
        op("ET", vec![]),
    ];
    let content_id = document.add_object(Stream::new(
        dictionary! {},
        Content { operations }.encode().unwrap(),
    ));
    let pages_id = document
        .catalog()
        .unwrap()
        .get(b"Pages")
        .unwrap()
        .as_reference()
        .unwrap();
    let page_id = document.add_object(dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
        "Resources" => dictionary! { "Font" => dictionary! { "F2" => font_id } },
    });
    let pages = document
        .get_object_mut(pages_id)
        .unwrap()
        .as_dict_mut()
        .unwrap();
    pages.set("Kids", vec![Object::Reference(page_id)]);
    pages.set("Count", 1);
    let extracted = extract(DocumentFormat::Pdf, &save(document));
    assert_eq!(extracted.blocks, vec![paragraph("Hié日")]);
}

#[test]
fn a_pdf_without_text_is_refused_as_a_scan() {
    let drawing = vec![
        op("re", vec![0.into(), 0.into(), 100.into(), 100.into()]),
        op("f", vec![]),
    ];
    let bytes = save(build(vec![drawing.clone(), drawing], Some("Scanned")));
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Pdf, &bytes));
    assert!(
        message.contains("has no text layer; scanned documents are not supported"),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_a_pdf_is_refused() {
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Pdf, b"hello, world"));
    assert!(message.contains("not a PDF"), "{message}");
}

#[test]
fn garbage_after_a_pdf_header_is_refused_as_damaged() {
    let message =
        refusal(DocumentParser::new().extract(DocumentFormat::Pdf, b"%PDF-1.7\n\x00\xff garbage"));
    assert!(message.contains("PDF is damaged"), "{message}");
}

fn encrypted(user_password: &str) -> Vec<u8> {
    let mut document = build(vec![lines(&["Confidential text."])], None);
    let state = EncryptionState::try_from(EncryptionVersion::V2 {
        document: &document,
        owner_password: "owner",
        user_password,
        key_length: 128,
        permissions: Permissions::empty(),
    })
    .unwrap();
    document.encrypt(&state).unwrap();
    save(document)
}

#[test]
fn a_password_protected_pdf_is_refused() {
    let message = refusal(DocumentParser::new().extract(DocumentFormat::Pdf, &encrypted("secret")));
    assert!(message.contains("password-protected"), "{message}");
}

#[test]
fn a_pdf_restricted_only_by_an_owner_password_is_read() {
    let document = extract(DocumentFormat::Pdf, &encrypted(""));
    assert_eq!(document.blocks, vec![paragraph("Confidential text.")]);
}

#[test]
fn pdfs_past_the_limits_are_refused() {
    let pages = DocumentParser::with_limits(ExtractionLimits {
        max_pdf_pages: 1,
        ..Default::default()
    });
    let message = refusal(pages.extract(DocumentFormat::Pdf, &report()));
    assert!(message.contains("has 2 pages; at most 1"), "{message}");

    let content = DocumentParser::with_limits(ExtractionLimits {
        max_pdf_content_bytes: 100,
        ..Default::default()
    });
    let message = refusal(content.extract(DocumentFormat::Pdf, &report()));
    assert!(message.contains("page content"), "{message}");
}

#[test]
fn a_page_tree_that_loops_is_refused_not_followed_forever() {
    let mut document = build(vec![lines(&["Looping."])], None);
    let pages_id = document
        .catalog()
        .unwrap()
        .get(b"Pages")
        .unwrap()
        .as_reference()
        .unwrap();
    let pages = document
        .get_object_mut(pages_id)
        .unwrap()
        .as_dict_mut()
        .unwrap();
    pages.set("Kids", vec![Object::Reference(pages_id)]);
    let result = DocumentParser::new().extract(DocumentFormat::Pdf, &save(document));
    let message = refusal(result);
    assert!(message.contains("PDF is damaged"), "{message}");
}

/// Every outcome of a damaged file is a refusal or a document: never a panic
/// (the parser's panics are caught), never an error other than `Invalid`.
fn assert_handled(bytes: &[u8]) {
    match DocumentParser::new().extract(DocumentFormat::Pdf, bytes) {
        Ok(document) => assert!(!document.blocks.is_empty()),
        Err(error) => {
            refusal(Err(error));
        }
    }
}

#[test]
fn truncated_pdfs_are_refused_or_read_never_crash() {
    let bytes = report();
    let step = bytes.len() / 150 + 1;
    let (mut read, mut refused) = (0, 0);
    for length in (1..bytes.len()).step_by(step) {
        match DocumentParser::new().extract(DocumentFormat::Pdf, &bytes[..length]) {
            Ok(document) => {
                assert!(!document.blocks.is_empty());
                read += 1;
            }
            Err(error) => {
                refusal(Err(error));
                refused += 1;
            }
        }
    }
    // Lenient loading rebuilds the cross-reference table of a cut file when enough is left.
    assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
}

#[test]
fn garbled_pdfs_are_refused_or_read_never_crash() {
    let original = report();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..150 {
        let mut bytes = original.clone();
        for _ in 0..(1 + round % 20) {
            let position = (next() as usize) % bytes.len();
            bytes[position] = next() as u8;
        }
        assert_handled(&bytes);
    }
}

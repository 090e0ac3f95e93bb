//! Each dataset layout read from a small fixture written here in its official layout,
//! plus decoding, transforms and the batch loader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::{write::GzEncoder, Compression};
use image::{imageops, DynamicImage, ImageFormat, Rgb, RgbImage};
use models::preprocess::Preprocess;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use trainer::data::{
    self, decode, mat::MatValue, sample_rng, Batch, DataError, Dataset, Format, ImageCache, ImageSource, Loader,
    LoaderOptions, RandomResizedCrop, Sample, Split, Transform,
};

/// Write a small RGB PNG (whatever the file's extension says) filled with `colour`.
fn png(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([colour[0], colour[1].wrapping_add(x as u8), colour[2].wrapping_add(y as u8)])
    });
    img.save_with_format(path, ImageFormat::Png).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn names(d: &Dataset) -> Vec<String> {
    d.samples.iter().map(|s| s.name.clone()).collect()
}

fn labels(d: &Dataset) -> Vec<u32> {
    d.labels().expect("every sample labelled")
}

// ---------------------------------------------------------------- layouts

#[test]
fn plain_folder_is_recursive_sorted_and_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("b.PNG"), 4, 4, [1, 2, 3]);
    png(&root.join("a.jpg"), 4, 4, [1, 2, 3]);
    png(&root.join("sub/c.JpEg"), 4, 4, [1, 2, 3]);
    png(&root.join("sub/deeper/d.webp"), 4, 4, [1, 2, 3]);
    png(&root.join("sub/e.bmp"), 4, 4, [1, 2, 3]);
    png(&root.join("sub/f.GIF"), 4, 4, [1, 2, 3]);
    png(&root.join(".hidden.png"), 4, 4, [1, 2, 3]);
    write(&root.join("notes.txt"), "not an image");
    write(&root.join("sub/readme.md"), "not an image");

    assert_eq!(data::detect(root).unwrap(), Format::Folder);
    let d = data::load(root, Format::Auto, Split::All).unwrap();
    assert_eq!(d.format, Format::Folder);
    assert_eq!(names(&d), ["a.jpg", "b.PNG", "sub/c.JpEg", "sub/deeper/d.webp", "sub/e.bmp", "sub/f.GIF"]);
    assert!(d.labels().is_none());
    assert!(d.classes.is_empty());
    // A plain folder has no classes to split by: every split is all of it.
    assert_eq!(data::load(root, Format::Folder, Split::Test).unwrap().len(), 6);
}

#[test]
fn labeled_folder_one_subfolder_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("cat/1.png"), 4, 4, [0, 0, 0]);
    png(&root.join("cat/2.png"), 4, 4, [0, 0, 0]);
    png(&root.join("dog/x/3.png"), 4, 4, [0, 0, 0]);
    png(&root.join("emu/4.png"), 4, 4, [0, 0, 0]);
    std::fs::create_dir_all(root.join("empty")).unwrap();

    assert_eq!(data::detect(root).unwrap(), Format::Labeled);
    let all = data::load(root, Format::Auto, Split::All).unwrap();
    assert_eq!(all.classes, ["cat", "dog", "emu"]);
    assert_eq!(labels(&all), [0, 0, 1, 2]);
    assert_eq!(all.num_labels_present(), 3);
    let train = data::load(root, Format::Labeled, Split::Train).unwrap();
    assert_eq!(names(&train), ["cat/1.png", "cat/2.png", "dog/x/3.png"]);
    let test = data::load(root, Format::Labeled, Split::Test).unwrap();
    assert_eq!(labels(&test), [2]);

    // An image outside the class folders is not silently given a class.
    png(&root.join("stray.png"), 4, 4, [0, 0, 0]);
    assert_eq!(data::detect(root).unwrap(), Format::Folder);
    let err = data::load(root, Format::Labeled, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Layout { .. }), "{err}");
    assert!(err.to_string().contains("stray.png"), "{err}");
}

/// CUB-200-2011 layout with classes 1, 100 (train) and 101, 200 (test).
fn cub_fixture(root: &Path) {
    let images = [(1, "001.Albatross/a.png"), (2, "100.Pelican/b.png"), (3, "101.Gull/c.png"), (4, "200.Wren/d.png")];
    let mut list = String::new();
    for (id, rel) in images {
        png(&root.join("images").join(rel), 5, 4, [id as u8, 0, 0]);
        list += &format!("{id} {rel}\n");
    }
    write(&root.join("images.txt"), &list);
    write(&root.join("image_class_labels.txt"), "1 1\n2 100\n3 101\n4 200\n");
}

#[test]
fn cub_split_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    cub_fixture(root);
    assert_eq!(data::detect(root).unwrap(), Format::Cub);
    let train = data::load(root, Format::Auto, Split::Train).unwrap();
    assert_eq!(train.format, Format::Cub);
    assert_eq!(labels(&train), [0, 99]);
    assert_eq!(names(&train), ["images/001.Albatross/a.png", "images/100.Pelican/b.png"]);
    assert_eq!(train.classes.len(), 200);
    assert_eq!(train.classes[0], "001.Albatross");
    assert_eq!(train.classes[199], "200.Wren");
    let test = data::load(root, Format::Cub, Split::Test).unwrap();
    assert_eq!(labels(&test), [100, 199]);
    assert_eq!(data::load(root, Format::Cub, Split::All).unwrap().len(), 4);
    let img = decode(&test.samples[0]).unwrap();
    assert_eq!(img.dimensions(), (5, 4));
    assert_eq!(img.get_pixel(0, 0)[0], 3);

    // classes.txt, when present, names the classes.
    write(&root.join("classes.txt"), "1 001.Black_footed_Albatross\n");
    assert_eq!(data::load(root, Format::Cub, Split::Train).unwrap().classes[0], "001.Black_footed_Albatross");
}

#[test]
fn cub_malformed_index_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    cub_fixture(root);
    write(&root.join("image_class_labels.txt"), "1 1\n2 100\n3 bird\n4 200\n");
    let err = data::load(root, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 3, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("image_class_labels.txt") && msg.contains("line 3") && msg.contains("bird"), "{msg}");

    write(&root.join("image_class_labels.txt"), "1 1\n2 100\n3 101\n");
    let err = data::load(root, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 4, .. }), "image 4 has no class: {err}");
}

#[test]
fn cub_pointing_at_missing_images_fails_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    cub_fixture(root);
    std::fs::remove_dir_all(root.join("images")).unwrap();
    let err = data::load(root, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Layout { format: Format::Cub, .. }), "{err}");
    assert!(err.to_string().contains("a.png"), "{err}");
}

/// Cars-196 layout: car_ims/ and cars_annos.mat with classes 1, 98 (train), 99, 196 (test).
fn cars_fixture(root: &Path, compress: bool) {
    let classes = [1.0, 98.0, 99.0, 196.0];
    let num = |v: f64| MatValue::Numeric { dims: vec![1, 1], data: vec![v] };
    let mut elements = Vec::new();
    for (i, &c) in classes.iter().enumerate() {
        let rel = format!("car_ims/{:06}.png", i + 1);
        png(&root.join(&rel), 6, 3, [0, i as u8, 0]);
        elements.push(vec![
            MatValue::Char { dims: vec![1, rel.len()], text: rel },
            num(1.0),
            num(2.0),
            num(5.0),
            num(3.0),
            num(c),
            num((i % 2) as f64),
        ]);
    }
    let fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"];
    let annotations = MatValue::Struct {
        dims: vec![1, elements.len()],
        fields: fields.iter().map(|s| s.to_string()).collect(),
        elements,
    };
    let names: Vec<MatValue> = (1..=196)
        .map(|c| {
            let t = format!("Make Model {c}");
            MatValue::Char { dims: vec![1, t.len()], text: t }
        })
        .collect();
    let class_names = MatValue::Cell { dims: vec![1, names.len()], items: names };
    let mut f = std::fs::File::create(root.join("cars_annos.mat")).unwrap();
    data::mat::write(&[("annotations", annotations), ("class_names", class_names)], compress, &mut f).unwrap();
}

#[test]
fn cars_split_by_class_compressed_and_plain() {
    for compress in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        cars_fixture(root, compress);
        assert_eq!(data::detect(root).unwrap(), Format::Cars);
        let train = data::load(root, Format::Auto, Split::Train).unwrap();
        assert_eq!(labels(&train), [0, 97]);
        assert_eq!(names(&train), ["car_ims/000001.png", "car_ims/000002.png"]);
        assert_eq!(train.classes.len(), 196);
        assert_eq!(train.classes[195], "Make Model 196");
        let test = data::load(root, Format::Cars, Split::Test).unwrap();
        assert_eq!(labels(&test), [98, 195]);
        assert_eq!(decode(&test.samples[1]).unwrap().dimensions(), (6, 3));
    }
}

#[test]
fn cars_corrupt_annotations_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    cars_fixture(root, true);
    let mut bytes = std::fs::read(root.join("cars_annos.mat")).unwrap();
    let len = bytes.len();
    bytes.truncate(len - 30);
    std::fs::write(root.join("cars_annos.mat"), &bytes).unwrap();
    let err = data::load(root, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::BadFile { .. }), "{err}");
    assert!(err.to_string().contains("cars_annos.mat"), "{err}");

    // A valid MAT file without `annotations`.
    let mut f = std::fs::File::create(root.join("cars_annos.mat")).unwrap();
    data::mat::write(&[("other", MatValue::Numeric { dims: vec![1, 1], data: vec![1.0] })], false, &mut f).unwrap();
    let err = data::load(root, Format::Cars, Split::All).unwrap_err();
    assert!(err.to_string().contains("annotations"), "{err}");
}

fn sop_fixture(root: &Path) {
    let header = "image_id class_id super_class_id path\n";
    write(
        &root.join("Ebay_train.txt"),
        &format!("{header}1 1 1 bicycle_final/1_0.png\n2 1 1 bicycle_final/1_1.png\n3 2 1 bicycle_final/2_0.png\n"),
    );
    write(&root.join("Ebay_test.txt"), &format!("{header}4 3 2 chair_final/3_0.png\n5 3 2 chair_final/3_1.png\n"));
    for rel in [
        "bicycle_final/1_0.png",
        "bicycle_final/1_1.png",
        "bicycle_final/2_0.png",
        "chair_final/3_0.png",
        "chair_final/3_1.png",
    ] {
        png(&root.join(rel), 3, 3, [9, 9, 9]);
    }
}

#[test]
fn sop_official_lists() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sop_fixture(root);
    assert_eq!(data::detect(root).unwrap(), Format::Sop);
    let train = data::load(root, Format::Auto, Split::Train).unwrap();
    assert_eq!(labels(&train), [0, 0, 1]);
    assert_eq!(names(&train)[2], "bicycle_final/2_0.png");
    let test = data::load(root, Format::Sop, Split::Test).unwrap();
    assert_eq!(labels(&test), [2, 2]);
    assert_eq!(test.classes[2], "chair_final 3");
    assert_eq!(data::load(root, Format::Sop, Split::All).unwrap().len(), 5);

    write(&root.join("Ebay_test.txt"), "image_id class_id super_class_id path\n4 3 chair_final/3_0.png\n");
    let err = data::load(root, Format::Sop, Split::Test).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("Ebay_test.txt"), "{err}");
}

/// An IDX file of unsigned bytes with the given dimensions.
fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Fashion-MNIST-like IDX files: train (gzipped) with 6 images 2x3, t10k (raw) with 2.
fn idx_fixture(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let train_labels = [0u8, 1, 5, 9, 4, 7];
    let train_pixels: Vec<u8> = (0..6 * 6).map(|v| v as u8).collect();
    std::fs::write(root.join("train-images-idx3-ubyte.gz"), gz(&idx_bytes(&[6, 2, 3], &train_pixels))).unwrap();
    std::fs::write(root.join("train-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[6], &train_labels))).unwrap();
    std::fs::write(root.join("t10k-images-idx3-ubyte"), idx_bytes(&[2, 2, 3], &[200; 12])).unwrap();
    std::fs::write(root.join("t10k-labels-idx1-ubyte"), idx_bytes(&[2], &[3, 8])).unwrap();
}

#[test]
fn idx_pools_files_and_splits_classes_0_4_and_5_9() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fashion-mini");
    idx_fixture(&root);
    assert_eq!(data::detect(&root).unwrap(), Format::Idx);
    let train = data::load(&root, Format::Auto, Split::Train).unwrap();
    assert_eq!(labels(&train), [0, 1, 4, 3]);
    assert_eq!(
        names(&train),
        [
            "train-images-idx3-ubyte.gz[0]",
            "train-images-idx3-ubyte.gz[1]",
            "train-images-idx3-ubyte.gz[4]",
            "t10k-images-idx3-ubyte[0]"
        ]
    );
    assert_eq!(train.classes[0], "T-shirt/top");
    let test = data::load(&root, Format::Idx, Split::Test).unwrap();
    assert_eq!(labels(&test), [5, 9, 7, 8]);

    // Image 1 of the train file: pixels 6..12, 3 wide and 2 high, grey replicated.
    let img = decode(&train.samples[1]).unwrap();
    assert_eq!(img.dimensions(), (3, 2));
    assert_eq!(img.get_pixel(2, 1), &Rgb([11, 11, 11]));
    assert_eq!(img.get_pixel(0, 0), &Rgb([6, 6, 6]));
}

#[test]
fn idx_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mnist");
    idx_fixture(&root);
    std::fs::write(root.join("t10k-images-idx3-ubyte"), idx_bytes(&[2, 2, 3], &[0; 11])).unwrap();
    let err = data::load(&root, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::BadFile { .. }), "{err}");
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");

    std::fs::write(root.join("t10k-images-idx3-ubyte"), idx_bytes(&[2, 2, 3], &[0; 12])).unwrap();
    std::fs::remove_file(root.join("t10k-labels-idx1-ubyte")).unwrap();
    let err = data::load(&root, Format::Auto, Split::All).unwrap_err();
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte"), "{err}");
}

/// The real Fashion-MNIST files installed by scripts/setup.sh.
#[test]
fn real_fashion_mnist_zero_shot_split() {
    // STML_DEPS comes from .cargo/config.toml; the fallback is the repository's deps/.
    let deps = std::env::var_os("STML_DEPS").map(PathBuf::from);
    let root = deps.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deps")).join("fashion-mnist");
    assert!(root.is_dir(), "{} is missing: run scripts/setup.sh", root.display());
    let train = data::load(&root, Format::Auto, Split::Train).unwrap();
    let test = data::load(&root, Format::Auto, Split::Test).unwrap();
    assert_eq!(train.format, Format::Idx);
    assert_eq!((train.len(), test.len()), (35_000, 35_000));
    assert_eq!(train.classes[9], "Ankle boot");
    let l = labels(&train);
    assert!(l.iter().all(|&c| c < 5));
    assert_eq!(l.iter().filter(|&&c| c == 3).count(), 7_000);
    assert!(labels(&test).iter().all(|&c| (5..10).contains(&c)));
    // The first image of the train file is an ankle boot (label 9): the test split's first.
    assert_eq!(decode(&test.samples[0]).unwrap().dimensions(), (28, 28));
    assert_eq!(test.samples[0].name, "train-images-idx3-ubyte.gz[0]");
}

#[test]
fn clear_errors_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = data::load(&missing, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }) && err.to_string().contains("nope"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    write(&empty.join("readme.txt"), "no images");
    let err = data::load(&empty, Format::Auto, Split::All).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");

    let file = dir.path().join("x.png");
    png(&file, 2, 2, [0, 0, 0]);
    assert!(matches!(data::load(&file, Format::Auto, Split::All).unwrap_err(), DataError::Layout { .. }));

    for (format, wanted) in [
        (Format::Cub, "image_class_labels.txt"),
        (Format::Sop, "Ebay_train.txt"),
        (Format::Cars, "cars_annos.mat"),
        (Format::Idx, "idx3"),
    ] {
        let err = data::load(&empty, format, Split::All).unwrap_err();
        assert!(err.to_string().contains(wanted), "{format}: {err}");
    }

    // A labelled layout whose split holds no image is an error too.
    let one = dir.path().join("one");
    png(&one.join("a/1.png"), 2, 2, [0, 0, 0]);
    assert!(matches!(data::load(&one, Format::Labeled, Split::Test).unwrap_err(), DataError::Empty { .. }));
}

// ---------------------------------------------------------------- decoding

/// A PNG file whose header claims `w` x `h` pixels (CRC fixed up), the rest a real 1x1 image.
fn png_claiming(path: &Path, w: u32, h: u32) {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(RgbImage::new(1, 1))
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    // Signature (8) + IHDR length (4) + "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn file_sample(path: &Path) -> Sample {
    Sample { source: ImageSource::File(path.to_path_buf()), label: None, name: path.display().to_string() }
}

#[test]
fn decode_grey_corrupt_and_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let grey = dir.path().join("grey.png");
    image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(10 * x + y) as u8])).save(&grey).unwrap();
    let img = decode(&file_sample(&grey)).unwrap();
    assert_eq!(img.get_pixel(2, 1), &Rgb([21, 21, 21]));

    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let err = decode(&file_sample(&corrupt)).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }) && err.to_string().contains("corrupt.jpg"), "{err}");

    let bomb = dir.path().join("bomb.png");
    png_claiming(&bomb, 1, 1);
    assert!(decode(&file_sample(&bomb)).is_ok(), "the fixture itself must be a valid PNG");
    png_claiming(&bomb, 60_000, 60_000);
    let start = std::time::Instant::now();
    let err = decode(&file_sample(&bomb)).unwrap_err();
    assert!(err.to_string().contains("bomb.png"), "{err}");
    assert!(start.elapsed().as_secs_f64() < 1.0, "the limit must stop the decoder before it allocates");
}

// ---------------------------------------------------------------- transforms

#[test]
fn random_resized_crop_stays_in_its_ranges() {
    for min_scale in [trainer::config::PAPER_CROP_SCALE, 0.4] {
        let crop = RandomResizedCrop::new(16, min_scale);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (w, h) = (200u32, 120u32);
        let mut distinct = std::collections::HashSet::new();
        let mut smallest = 1f64;
        for _ in 0..2000 {
            let b = crop.params(w, h, &mut rng);
            assert!(b.w >= 1 && b.h >= 1 && b.x + b.w <= w && b.y + b.h <= h, "{b:?}");
            let area = (b.w * b.h) as f64 / (w * h) as f64;
            // Rounding each side to whole pixels moves area and ratio slightly.
            assert!((min_scale - 0.01..=1.0).contains(&area), "area fraction {area} under {min_scale}");
            smallest = smallest.min(area);
            let ratio = b.w as f64 / b.h as f64;
            assert!((0.72..=1.39).contains(&ratio), "ratio {ratio}");
            distinct.insert((b.x, b.y, b.w, b.h));
        }
        assert!(smallest < min_scale + 0.02, "the smallest crops reach {min_scale}: {smallest}");
        assert!(distinct.len() > 1000, "crops should vary: {}", distinct.len());
    }
}

#[test]
fn random_resized_crop_falls_back_to_the_centre() {
    let crop = RandomResizedCrop::new(8, trainer::config::PAPER_CROP_SCALE);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // No box of >= 16% of a 100x1 strip with ratio <= 4/3 fits: torchvision's fallback
    // keeps the full height and width round(1 * 4/3) = 1, centred.
    let b = crop.params(100, 1, &mut rng);
    assert_eq!((b.x, b.y, b.w, b.h), (49, 0, 1, 1));
    let b = crop.params(3, 100, &mut rng);
    assert_eq!((b.x, b.y, b.w, b.h), (0, 48, 3, 4));
    // The whole image when scale and ratio force it.
    let whole = RandomResizedCrop { size: 8, scale: (1.0, 1.0), ratio: (2.0, 2.0) };
    assert_eq!(whole.params(40, 20, &mut rng), data::CropBox { x: 0, y: 0, w: 40, h: 20 });
}

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8]))
}

#[test]
fn transforms_match_their_definitions() {
    let pre = Preprocess::imagenet(20, 16);
    let img = gradient(40, 24);
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    let sampling = Transform::sampling(&pre, 12);
    let expected = pre.normalize(&contract::resize(&img, 12, 12));
    assert_eq!(sampling.apply(&img, &mut rng), expected);
    assert_eq!(sampling.output_size(), 12);

    let eval = Transform::eval(&pre);
    assert_eq!(eval.apply(&img, &mut rng), pre.apply(&DynamicImage::ImageRgb8(img.clone())));
    assert_eq!(eval.output_size(), 16);

    // Scale 1 and the image's own ratio: the crop is the whole image; flip always.
    let flip = Transform::Train {
        crop: RandomResizedCrop { size: 10, scale: (1.0, 1.0), ratio: (40.0 / 24.0, 40.0 / 24.0) },
        flip_p: 1.0,
        preprocess: pre.clone(),
    };
    let mut resized = contract::resize(&img, 10, 10);
    imageops::flip_horizontal_in_place(&mut resized);
    assert_eq!(flip.apply(&img, &mut rng), pre.normalize(&resized));

    let train = Transform::train(&pre, trainer::config::PAPER_CROP_SCALE);
    assert_eq!(train.output_size(), 16);
    let a = train.apply(&img, &mut sample_rng(1, 2, 3, 4, 0));
    assert_eq!(a.len(), 3 * 16 * 16);
    assert_eq!(a, train.apply(&img, &mut sample_rng(1, 2, 3, 4, 0)), "same key, same view");
    assert_ne!(a, train.apply(&img, &mut sample_rng(1, 2, 3, 4, 1)), "another view differs");
    assert_ne!(a, train.apply(&img, &mut sample_rng(1, 3, 3, 4, 0)), "another epoch differs");
}

// ---------------------------------------------------------------- loader

/// Five labelled images of different sizes, plus one corrupt file at index 5.
fn loader_dataset(root: &Path) -> Arc<Dataset> {
    let mut samples = Vec::new();
    for i in 0..5u32 {
        let p = root.join(format!("{i}.png"));
        png(&p, 20 + 3 * i, 16 + i, [(40 * i) as u8, 10, 20]);
        samples.push(Sample { source: ImageSource::File(p), label: Some(i % 2), name: format!("{i}.png") });
    }
    let bad = root.join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    samples.push(Sample { source: ImageSource::File(bad), label: Some(1), name: "bad.png".into() });
    Arc::new(Dataset {
        root: root.to_path_buf(),
        format: Format::Folder,
        split: Split::All,
        samples,
        classes: vec!["a".into(), "b".into()],
    })
}

fn run(d: &Arc<Dataset>, batches: Vec<Vec<usize>>, t: &Transform, options: LoaderOptions) -> (Vec<Batch>, usize) {
    let mut loader = Loader::new(d.clone(), batches, t.clone(), options).unwrap();
    let out: Vec<Batch> = loader.by_ref().collect();
    (out, loader.skipped())
}

#[test]
fn loader_yields_view_major_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = loader_dataset(dir.path());
    let pre = Preprocess::imagenet(10, 8);
    let eval = Transform::eval(&pre);
    let opts = LoaderOptions { views: 2, threads: 2, prefetch: 1, ..Default::default() };
    let (batches, skipped) = run(&d, vec![vec![2, 0, 1], vec![3, 4]], &eval, opts);
    assert_eq!(skipped, 0);
    assert_eq!(batches.len(), 2);
    let b = &batches[0];
    assert_eq!((b.index, b.images, b.views, b.rows, b.size), (0, 3, 2, 6, 8));
    assert_eq!(b.idx, [2, 0, 1, 2, 0, 1]);
    assert_eq!(b.labels.as_deref(), Some(&[0, 0, 1, 0, 0, 1][..]));
    let per = 3 * 8 * 8;
    assert_eq!(b.data.len(), 6 * per);
    let want = eval.apply(&decode(&d.samples[0]).unwrap(), &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!(&b.data[per..2 * per], &want[..]);
    assert_eq!(&b.data[4 * per..5 * per], &want[..], "the eval transform gives both views the same pixels");
    assert_eq!(batches[1].idx, [3, 4, 3, 4]);
    assert_eq!(data::sequential_batches(5, 2), vec![vec![0, 1], vec![2, 3], vec![4]]);
}

#[test]
fn loader_is_deterministic_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let d = loader_dataset(dir.path());
    let train = Transform::train(&Preprocess::imagenet(12, 10), trainer::config::PAPER_CROP_SCALE);
    let batches = vec![vec![0, 1, 2, 3], vec![4, 0]];
    let opts = |threads, seed| LoaderOptions { views: 2, threads, prefetch: 2, seed, epoch: 3, cache: None };
    let (one, _) = run(&d, batches.clone(), &train, opts(1, 5));
    let (three, _) = run(&d, batches.clone(), &train, opts(3, 5));
    let (other, _) = run(&d, batches.clone(), &train, opts(2, 6));
    assert_eq!(one.len(), 2);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.data, b.data);
    }
    assert_ne!(one[0].data, other[0].data, "another seed draws other crops");
    let per = 3 * 10 * 10;
    let b = &one[0];
    assert_ne!(&b.data[..per], &b.data[4 * per..5 * per], "the two views of an image are augmented independently");
    // Image 0 appears in both batches and still gets fresh augmentations.
    assert_ne!(&one[0].data[..per], &one[1].data[per..2 * per]);
}

#[test]
fn loader_skips_and_counts_corrupt_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = loader_dataset(dir.path());
    let eval = Transform::eval(&Preprocess::imagenet(10, 8));
    let opts = LoaderOptions { views: 2, threads: 2, ..Default::default() };
    let (batches, skipped) = run(&d, vec![vec![0, 5, 2], vec![5], vec![1]], &eval, opts);
    assert_eq!(skipped, 2);
    assert_eq!(batches.len(), 2, "a batch with no decodable image is not yielded");
    assert_eq!(batches[0].idx, [0, 2, 0, 2]);
    assert_eq!(batches[0].skipped, [5]);
    assert_eq!(batches[0].data.len(), 4 * 3 * 8 * 8);
    assert_eq!(batches[1].index, 2);

    let err = Loader::new(d.clone(), vec![vec![0, 6]], eval.clone(), LoaderOptions::default()).err().unwrap();
    assert!(matches!(err, DataError::IndexOutOfRange { index: 6, len: 6 }), "{err}");
}

#[test]
fn image_cache_keeps_decoded_images_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = loader_dataset(dir.path());
    let eval = Transform::eval(&Preprocess::imagenet(10, 8));
    let cache = Arc::new(ImageCache::new(d.len(), 1 << 20));
    let opts = LoaderOptions { cache: Some(cache.clone()), ..Default::default() };
    let (first, _) = run(&d, vec![vec![0, 1, 2, 3, 4, 5]], &eval, opts.clone());
    let all: u64 = (0..5).map(|i| decode(&d.samples[i]).unwrap().as_raw().len() as u64).sum();
    assert_eq!(cache.used_bytes(), all, "every decodable image is cached, the corrupt one is not");
    let (second, skipped) = run(&d, vec![vec![0, 1, 2, 3, 4, 5]], &eval, opts);
    assert_eq!(first[0].data, second[0].data);
    assert_eq!(skipped, 1, "failures are not cached");

    let small = ImageCache::new(d.len(), 2000);
    for i in 0..5 {
        small.get_or_decode(&d, i).unwrap();
    }
    assert!(small.used_bytes() <= 2000 && small.used_bytes() > 0);
}

#[test]
fn default_splits_and_class_hold_out() {
    use data::Purpose;
    // Layouts with an official zero-shot split train on its train half and evaluate on the
    // test half; a folder (labelled or not) is used whole.
    for f in [Format::Cub, Format::Cars, Format::Sop, Format::Idx] {
        assert_eq!(f.default_split(Purpose::Train), Split::Train);
        assert_eq!(f.default_split(Purpose::Eval), Split::Test);
    }
    for f in [Format::Folder, Format::Labeled] {
        assert_eq!(f.default_split(Purpose::Train), Split::All);
        assert_eq!(f.default_split(Purpose::Eval), Split::All);
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for c in 0..10 {
        for i in 0..3 {
            png(&root.join(format!("k{c}/{i}.png")), 4, 4, [0, 0, 0]);
        }
    }
    let all = data::load(root, Format::Auto, Split::All).unwrap();
    let (kept, held) = all.hold_out_classes(0.3, 7).unwrap();
    assert_eq!((kept.num_labels_present(), held.num_labels_present()), (7, 3));
    assert_eq!(kept.len() + held.len(), 30);
    let a: std::collections::HashSet<u32> = labels(&kept).into_iter().collect();
    assert!(labels(&held).iter().all(|l| !a.contains(l)), "held-out classes are never trained on");
    // The same seed holds out the same classes; a fraction rounding to none still holds one out.
    assert_eq!(labels(&all.hold_out_classes(0.3, 7).unwrap().1), labels(&held));
    assert_eq!(all.hold_out_classes(0.01, 7).unwrap().1.num_labels_present(), 1);
    // Unlabelled data has no classes to hold out: a clear error.
    let folder = data::load(root, Format::Folder, Split::All).unwrap();
    let err = folder.hold_out_classes(0.5, 0).unwrap_err().to_string();
    assert!(err.contains("--eval-data"), "{err}");
}

#[test]
fn known_labels_from_a_fraction_of_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for c in 0..4 {
        for i in 0..25 {
            png(&root.join(format!("k{c}/{i}.png")), 4, 4, [0, 0, 0]);
        }
    }
    let all = data::load(root, Format::Auto, Split::All).unwrap();
    let k = data::labels::KnownLabels::fraction(&all, 0.1, 3).unwrap();
    assert_eq!(k.count, 10);
    let truth = labels(&all);
    for (i, &l) in k.labels.iter().enumerate() {
        assert!(l == -1 || l == truth[i] as i64);
    }
    assert_eq!(k, data::labels::KnownLabels::fraction(&all, 0.1, 3).unwrap(), "seeded");
}

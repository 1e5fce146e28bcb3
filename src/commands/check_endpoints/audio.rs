//! Audio for the speech and transcription checks: recognising a format by its first bytes,
//! comparing what was said word by word, and the `multipart/form-data` upload the SDKs send.

use bytes::Bytes;

/// OpenAI's name; whisper.cpp ignores it.
pub(super) const TRANSCRIPTION_MODEL: &str = "whisper-1";

/// The clip sent for transcription when there is no fresh speech to send, and its words.
pub(super) const SAMPLE_CLIP: &[u8] = include_bytes!("../../../tests/fixtures/huge-manatees.mp3");
pub(super) const SAMPLE_CLIP_NAME: &str = "huge-manatees.mp3";
pub(super) const SAMPLE_CLIP_TEXT: &str = "Huge manatees.";

/// An audio format, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AudioFormat {
    pub name: &'static str,
    /// For the uploaded file's name and part type: services guess the format from them.
    pub ext: &'static str,
    pub mime: &'static str,
}

const fn format(name: &'static str, ext: &'static str, mime: &'static str) -> AudioFormat {
    AudioFormat { name, ext, mime }
}

pub(super) const MP3: AudioFormat = format("MP3", "mp3", "audio/mpeg");

pub(super) fn audio_format(b: &[u8]) -> Option<AudioFormat> {
    let at = |i: usize, magic: &[u8]| b.get(i..i + magic.len()) == Some(magic);
    if at(0, b"ID3") {
        Some(MP3)
    } else if b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0 {
        // MPEG audio frame sync; layer bits 00 mean AAC in an ADTS frame.
        if b[1] & 0x06 == 0 {
            Some(format("AAC", "aac", "audio/aac"))
        } else {
            Some(MP3)
        }
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some(format("WAV", "wav", "audio/wav"))
    } else if at(0, b"OggS") {
        Some(format("Ogg", "ogg", "audio/ogg"))
    } else if at(0, b"fLaC") {
        Some(format("FLAC", "flac", "audio/flac"))
    } else if at(4, b"ftyp") {
        Some(format("MP4", "m4a", "audio/mp4"))
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(format("WebM", "webm", "audio/webm"))
    } else {
        None
    }
}

/// Lower-case words, punctuation dropped: what a round trip through speech should keep.
pub(super) fn words(text: &str) -> Vec<String> {
    text.chars()
        .filter(|c| *c != '\'' && *c != '’')
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A `multipart/form-data` upload of `audio` for `model`, as the SDKs send it (the model
/// first): its content type and body.
pub(super) fn multipart(file_name: &str, mime: &str, audio: &[u8], model: &str) -> (String, Bytes) {
    let mut boundary = String::from("openai-proxy-check-5f0c9e2a7b");
    while audio
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let mut body = Vec::with_capacity(audio.len() + 512);
    for (name, value) in [("model", model), ("response_format", "json")] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{file_name}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// Audio to transcribe and what it says.
pub(super) struct Clip {
    pub audio: Bytes,
    pub file_name: String,
    pub mime: &'static str,
    pub text: &'static str,
    /// Where it came from, for the result line.
    pub origin: &'static str,
}

/// The clip built into the binary, for a transcription without fresh speech.
pub(super) fn built_in_clip() -> Clip {
    Clip {
        audio: Bytes::from_static(SAMPLE_CLIP),
        file_name: SAMPLE_CLIP_NAME.into(),
        mime: MP3.mime,
        text: SAMPLE_CLIP_TEXT,
        origin: "built-in clip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_signatures() {
        assert_eq!(audio_format(SAMPLE_CLIP).map(|f| f.name), Some("MP3"));
        assert_eq!(audio_format(b"ID3\x04rest").map(|f| f.name), Some("MP3"));
        assert_eq!(
            audio_format(&[0xFF, 0xF1, 0x50]).map(|f| f.name),
            Some("AAC")
        );
        assert_eq!(
            audio_format(b"RIFF\0\0\0\0WAVEfmt ").map(|f| f.name),
            Some("WAV")
        );
        assert_eq!(audio_format(b"OggS\0").map(|f| f.name), Some("Ogg"));
        assert_eq!(audio_format(b"fLaC").map(|f| f.name), Some("FLAC"));
        assert_eq!(
            audio_format(b"\0\0\0\x20ftypM4A ").map(|f| f.name),
            Some("MP4")
        );
        assert_eq!(audio_format(b"<html>"), None);
        assert_eq!(audio_format(b"{\"error\":1}"), None);
        assert_eq!(audio_format(b""), None);
    }

    #[test]
    fn words_ignore_case_and_punctuation() {
        assert_eq!(words("Huge manatees."), ["huge", "manatees"]);
        assert_eq!(words(" huge, MANATEES!"), words(SAMPLE_CLIP_TEXT));
        assert_eq!(words("Don't stop"), ["dont", "stop"]);
        assert_ne!(words("huge manatee"), words(SAMPLE_CLIP_TEXT));
    }

    #[test]
    fn multipart_boundary_never_occurs_in_the_audio() {
        let audio = b"--openai-proxy-check-5f0c9e2a7b in the data".to_vec();
        let (ct, body) = multipart("a.mp3", "audio/mpeg", &audio, TRANSCRIPTION_MODEL);
        let boundary = ct.split("boundary=").nth(1).unwrap();
        assert_eq!(boundary, "openai-proxy-check-5f0c9e2a7bx");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n"));
        assert!(text.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"));
    }
}

// One request the way a Java app makes it, with HttpURLConnection, which
// reads http.proxyHost/http.proxyPort (reliability/clients_test.go), or
// https.proxyHost/https.proxyPort and javax.net.ssl.trustStore
// (reliability/https_clients_test.go), from the system properties
// (JAVA_TOOL_OPTIONS): prints the status, then the body.
//   java Client.java URL
import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Client {
    public static void main(String[] args) throws Exception {
        HttpURLConnection c = (HttpURLConnection) new URL(args[0]).openConnection();
        try {
            int code = c.getResponseCode();
            InputStream in = code < 400 ? c.getInputStream() : c.getErrorStream();
            System.out.println(code);
            if (in != null) {
                System.out.println(new String(in.readAllBytes(), "UTF-8"));
            }
        } catch (IOException e) {
            // A refused tunnel is an exception whose message quotes the
            // proxy's status line.
            Matcher m = Pattern.compile("HTTP/1\\.\\d (\\d{3})").matcher(String.valueOf(e.getMessage()));
            if (!m.find()) {
                throw e;
            }
            System.out.println(m.group(1));
            System.out.println(e.getMessage());
        }
    }
}
